//! Spool unit tests over a temporary folder.

use super::*;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("postern-spool-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

fn envelope() -> Envelope {
    let destination =
        postern_types::Destination::Mailbox { name: "a".into(), address: postern_types::Address::new("a", "x.test") };
    let recipients = vec![Recipient::new("a@x.test".into(), &destination)];
    Envelope::new(QueueId::generate(), "127.0.0.1".into(), "c.test".into(), String::new(), 5, recipients)
}

#[test]
fn commit_update_recover_remove() {
    let dir = tmpdir("cycle");
    let spool = Spool::open(&dir, SyncMode::Syncfs).unwrap();
    let mut env = envelope();
    spool.commit(&env, b"Received: x\r\n", b"hello").unwrap();
    assert_eq!(spool.read_message(env.id).unwrap(), b"Received: x\r\nhello");
    env.recipients[0].state = RcptState::Delivered;
    spool.update(&env).unwrap();
    // Orphans of interrupted operations are repaired at recovery.
    fs::write(dir.join("queue/0000000000000001.msg"), b"orphan").unwrap();
    fs::write(dir.join("queue/0000000000000002.env"), b"version = 1\n").unwrap();
    fs::write(dir.join("incoming/0000000000000003.msg"), b"staged").unwrap();
    let spool = Spool::open(&dir, SyncMode::Syncfs).unwrap();
    let recovered = spool.recover().unwrap();
    assert_eq!(recovered, vec![env.clone()]);
    assert!(!dir.join("queue/0000000000000001.msg").exists());
    assert!(dir.join("corrupt/0000000000000002.env").exists());
    assert_eq!(fs::read_dir(dir.join("incoming")).unwrap().count(), 0);
    spool.remove(env.id).unwrap();
    assert!(spool.recover().unwrap().is_empty());
    assert_eq!(fs::read_dir(dir.join("queue")).unwrap().count(), 0);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn envelope_text_is_readable_and_roundtrips() {
    let env = envelope();
    let text = env.to_text();
    assert!(text.contains("[[recipient]]"), "{text}");
    assert!(text.contains("state = \"pending\""), "{text}");
    assert_eq!(Envelope::from_text(&text).unwrap(), env);
    assert!(Envelope::from_text(&text.replace("version = 1", "version = 9")).is_err());
}

#[test]
fn concurrent_commits_share_syncs() {
    for mode in [SyncMode::Syncfs, SyncMode::Fsync] {
        concurrent_commits(mode);
    }
}

fn concurrent_commits(mode: SyncMode) {
    let dir = tmpdir(&format!("group-{mode:?}"));
    let spool = std::sync::Arc::new(Spool::open(&dir, mode).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let spool = spool.clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    spool.commit(&envelope(), b"", b"x").unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(spool.recover().unwrap().len(), 160);
    fs::remove_dir_all(&dir).unwrap();
}
