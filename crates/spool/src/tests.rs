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
    let forward_path = postern_types::ForwardPath::Mailbox(postern_types::Address::new("a", "x.test"));
    let recipients = vec![Recipient::new(forward_path, destination)];
    let client = std::net::IpAddr::from([127, 0, 0, 1]);
    Envelope::new(QueueId::generate(), client, "c.test".into(), postern_types::ReversePath::Null, 5, recipients)
}

#[test]
fn commit_update_recover_remove() {
    let dir = tmpdir("cycle");
    let spool = Spool::open(&dir, SyncMode::Syncfs).unwrap();
    let mut env = envelope();
    spool.commit(&env, b"Received: x\r\n", b"hello").unwrap();
    // One queue file per message: the envelope first, readable as text, then the message.
    let files: Vec<_> = fs::read_dir(dir.join("queue")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let text = fs::read_to_string(&files[0]).unwrap();
    assert!(text.starts_with("Postern-Envelope: ") && text.ends_with("\nReceived: x\r\nhello"), "{text}");
    assert_eq!(spool.read_message(env.id).unwrap(), b"Received: x\r\nhello");
    // Located without being read: the same bytes lie there.
    let found = spool.locate_message(env.id).unwrap();
    let file = fs::read(&found.path).unwrap();
    assert_eq!(&file[found.offset as usize..][..found.len as usize], b"Received: x\r\nhello");
    assert_eq!(found.offset as usize + found.len as usize, file.len());
    assert_eq!(spool.recover().unwrap(), vec![env.clone()]);
    // An update writes ID.env, which wins over the copy in the queue file.
    env.recipients[0].state = RcptState::Delivered;
    spool.update(&env).unwrap();
    assert_eq!(spool.recover().unwrap(), vec![env.clone()]);
    assert_eq!(read_envelopes(&dir).unwrap(), vec![Ok(env.clone())]);
    // Leftovers of interrupted operations are repaired at recovery.
    fs::write(dir.join("queue/0000000000000002.env"), b"version = 1\n").unwrap();
    fs::write(dir.join("queue/0000000000000004.env.tmp"), b"version = 1\n").unwrap();
    fs::write(dir.join("queue/0000000000000005.msg"), b"Postern-Envelope: 99\nversion = 1\n").unwrap();
    let huge = format!("Postern-Envelope: {}\nx", usize::MAX);
    fs::write(dir.join("queue/0000000000000006.msg"), huge).unwrap();
    fs::write(dir.join("incoming/0000000000000003.msg"), b"staged").unwrap();
    let spool = Spool::open(&dir, SyncMode::Syncfs).unwrap();
    assert_eq!(read_envelopes(&dir).unwrap().len(), 3, "read-only: the broken files are reported");
    let recovered = spool.recover().unwrap();
    assert_eq!(recovered, vec![env.clone()]);
    assert!(!dir.join("queue/0000000000000002.env").exists());
    assert!(!dir.join("queue/0000000000000004.env.tmp").exists());
    assert!(dir.join("corrupt/0000000000000005.msg").exists());
    assert!(dir.join("corrupt/0000000000000006.msg").exists());
    assert_eq!(fs::read_dir(dir.join("incoming")).unwrap().count(), 0);
    spool.remove(env.id).unwrap();
    assert!(spool.recover().unwrap().is_empty());
    assert_eq!(fs::read_dir(dir.join("queue")).unwrap().count(), 0);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn earlier_layout_is_still_read() {
    // Before one file per message: the message alone in ID.msg, the envelope in ID.env.
    let dir = tmpdir("earlier");
    let spool = Spool::open(&dir, SyncMode::Fsync).unwrap();
    let env = envelope();
    fs::write(spool.message_path(env.id), b"Received: x\r\nhello").unwrap();
    fs::write(dir.join(format!("queue/{}.env", env.id)), env.to_text()).unwrap();
    assert_eq!(spool.recover().unwrap(), vec![env.clone()]);
    assert_eq!(spool.read_message(env.id).unwrap(), b"Received: x\r\nhello");
    spool.remove(env.id).unwrap();
    assert_eq!(fs::read_dir(dir.join("queue")).unwrap().count(), 0);
    // A file of that layout without its envelope cannot be delivered: kept in corrupt/.
    fs::write(spool.message_path(env.id), b"Received: x\r\nhello").unwrap();
    assert!(spool.recover().unwrap().is_empty());
    assert!(dir.join(format!("corrupt/{}.msg", env.id)).exists());
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

#[test]
fn typed_results_and_ret_round_trip() {
    let mut env = envelope();
    env.ret = Some(crate::Ret::Hdrs);
    env.recipients[0].last_error = Some("451 4.4.1 connect to 192.0.2.9:25: timed out".into());
    env.recipients[0].last_result = Some(crate::LastResult {
        code: 451,
        status: [4, 4, 1],
        text: "connect to 192.0.2.9:25: timed out".into(),
        remote_host: Some("mx.far.test".into()),
        tls: Some("TLSv1.3".into()),
    });
    let text = env.to_text();
    assert!(text.contains("ret = \"hdrs\"") && text.contains("status = [4, 4, 1]"), "{text}");
    let back = Envelope::from_text(&text).unwrap();
    assert_eq!(back, env);
    assert_eq!(back.recipients[0].last_result.as_ref().unwrap().status(), postern_types::EnhancedStatus(4, 4, 1));
}

#[test]
fn spent_queue_files_are_reused_cut_to_length_and_never_read_as_another_message() {
    let dir = tmpdir("reuse");
    let spool = Spool::open(&dir, SyncMode::Syncfs).unwrap();
    let long = envelope();
    spool.commit(&long, b"Received: x\r\n", &[b'a'; 5000]).unwrap();
    let inode = |id: QueueId| std::os::unix::fs::MetadataExt::ino(&fs::metadata(spool.message_path(id)).unwrap());
    let first = inode(long.id);
    spool.remove(long.id).unwrap();
    assert_eq!(fs::read_dir(dir.join("free")).unwrap().count(), 1, "kept for reuse");
    // The next commit overwrites it: same inode, cut to the new length.
    let short = envelope();
    spool.commit(&short, b"Received: y\r\n", b"short").unwrap();
    assert_eq!(inode(short.id), first);
    assert_eq!(spool.read_message(short.id).unwrap(), b"Received: y\r\nshort");
    assert_eq!(fs::read_dir(dir.join("free")).unwrap().count(), 0);
    // A queue file under another message's name (a reuse a power cut half undid) is refused.
    fs::rename(spool.message_path(short.id), spool.message_path(long.id)).unwrap();
    assert!(matches!(spool.read_message(long.id), Err(SpoolError::Envelope { .. })));
    assert!(matches!(spool.locate_message(long.id), Err(SpoolError::Envelope { .. })));
    // Large files are not kept; free/ survives a restart, strangers in it are deleted.
    fs::rename(spool.message_path(long.id), spool.message_path(short.id)).unwrap();
    spool.remove(short.id).unwrap();
    let big = envelope();
    spool.commit(&big, b"", &vec![b'b'; FREE_FILE_MAX as usize + 1]).unwrap();
    // (It took the free file: none is left, and removing it unlinks.)
    spool.remove(big.id).unwrap();
    assert_eq!(fs::read_dir(dir.join("free")).unwrap().count(), 0);
    let again = envelope();
    spool.commit(&again, b"", b"x").unwrap();
    spool.remove(again.id).unwrap();
    fs::write(dir.join("free/stranger"), b"?").unwrap();
    let spool = Spool::open(&dir, SyncMode::Fsync).unwrap();
    assert_eq!(fs::read_dir(dir.join("free")).unwrap().count(), 1);
    let last = envelope();
    spool.commit(&last, b"", b"z").unwrap();
    assert_eq!(spool.read_message(last.id).unwrap(), b"z");
    assert!(spool.recover().unwrap().iter().map(|e| e.id).eq([last.id]));
    fs::remove_dir_all(&dir).unwrap();
}

/// The envelope file's format is unchanged by the typed envelope (issue 29): a file in every
/// shape the previous release wrote (null sender, a remote recipient with NOTIFY and ORCPT, a
/// mailbox, a pipe of an alias and one of a route) reads typed and is written back byte for
/// byte; a string that does not check makes the file corrupt, never a panic.
#[test]
fn envelope_files_of_the_previous_release_read_typed_and_write_back_unchanged() {
    use postern_types::{Destination, ForwardPath, ReversePath};
    let text = "# Postern envelope, see docs/spool.md
version = 1
id = \"00066197DEC3D9BD\"
arrival = 1795000000
client_ip = \"2001:db8::7\"
helo = \"mail.sender.test\"
reverse_path = \"\"
body_8bit = false
smtputf8 = false
size = 1234
ret = \"full\"

[[recipient]]
forward_path = \"team@example.test\"
address = \"bob@far.test\"
state = \"pending\"
attempts = 2
next_attempt = 1795000600
notify = \"SUCCESS,FAILURE\"
orcpt = \"rfc822;team@example.test\"

[[recipient]]
forward_path = \"Postmaster\"
address = \"root@example.test\"
mailbox = \"root\"
state = \"delivered\"
attempts = 1
next_attempt = 0

[[recipient]]
forward_path = \"proc@example.test\"
address = \"proc@example.test\"
mailbox = \"proc\"
pipe = \"/usr/bin/procmail\"
state = \"failed\"
attempts = 1
next_attempt = 0

[[recipient]]
forward_path = \"x@pipe.test\"
address = \"x@pipe.test\"
mailbox = \"\"
pipe = \"/usr/local/bin/intake\"
state = \"pending\"
attempts = 0
next_attempt = 0
";
    let env = Envelope::from_text(text).unwrap();
    assert_eq!(env.reverse_path, ReversePath::Null);
    assert_eq!(env.client_ip, "2001:db8::7".parse::<std::net::IpAddr>().unwrap());
    assert_eq!(env.ret, Some(crate::Ret::Full));
    let [remote, root, alias_pipe, route_pipe] = &env.recipients[..] else { panic!("{env:?}") };
    assert!(matches!(&remote.destination, Destination::Remote(a) if a.domain() == "far.test"));
    assert_eq!(remote.notify, Some(postern_types::dsn::Notify { success: true, failure: true, delay: false }));
    assert_eq!(root.forward_path, ForwardPath::Postmaster("Postmaster".into()));
    assert!(matches!(&root.destination, Destination::Mailbox { name, .. } if name == "root"));
    assert!(matches!(&alias_pipe.destination, Destination::Pipe { name, .. } if name == "proc"));
    assert!(matches!(&route_pipe.destination, Destination::Pipe { name, command, .. }
        if name.is_empty() && command == "/usr/local/bin/intake"));
    assert_eq!(env.to_text(), text);
    for bad in [
        text.replace("client_ip = \"2001:db8::7\"", "client_ip = \"nowhere\""),
        text.replace("reverse_path = \"\"", "reverse_path = \"no domain\""),
        text.replace("address = \"bob@far.test\"", "address = \"bob\""),
        text.replace("notify = \"SUCCESS,FAILURE\"", "notify = \"SOMETIMES\""),
    ] {
        assert!(Envelope::from_text(&bad).is_err(), "{bad}");
    }
}
