//! `postern import sendmail`: reads a sendmail + opendkim setup from disk, has
//! `postern_import` turn it into a Postern configuration, writes it to `--out`, checks it as
//! `check-config` would, and prints the report (also saved as `import-report.txt`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use postern_import::Sources;

/// `postern import sendmail`.
#[derive(Debug, Args)]
pub(crate) struct SendmailImport {
    /// sendmail's folder: sendmail.mc, local-host-names, relay-domains, access,
    /// virtusertable, mailertable, genericstable.
    #[arg(long, default_value = "/etc/mail")]
    mail_dir: PathBuf,
    /// The aliases file (default /etc/aliases, else aliases in --mail-dir).
    #[arg(long)]
    aliases: Option<PathBuf>,
    /// opendkim's configuration; its KeyTable, SigningTable and InternalHosts are read too.
    #[arg(long, default_value = "/etc/opendkim.conf")]
    opendkim: PathBuf,
    /// Local accounts (uid 1000 to 59999 become mailboxes).
    #[arg(long, default_value = "/etc/passwd")]
    passwd: PathBuf,
    /// Where to write postern.toml, its tables and import-report.txt (must not hold a
    /// postern.toml yet).
    #[arg(long)]
    out: PathBuf,
}

const MAIL_FILES: [&str; 7] =
    ["sendmail.mc", "local-host-names", "relay-domains", "access", "virtusertable", "mailertable", "genericstable"];

/// Reads what exists of the sendmail and opendkim files.
fn read_sources(args: &SendmailImport) -> Sources {
    let mut s = Sources::default();
    let mut read = |name: &str, path: &Path| {
        if let Ok(text) = std::fs::read_to_string(path) {
            s.files.insert(name.to_owned(), (path.to_path_buf(), text));
        }
    };
    for f in MAIL_FILES {
        read(f, &args.mail_dir.join(f));
    }
    // --aliases, else the sendmail.mc's ALIAS_FILE, else /etc/aliases, else the mail folder's.
    let mc = std::fs::read_to_string(args.mail_dir.join("sendmail.mc")).unwrap_or_default();
    let named = postern_import::alias_file(&mc).map(PathBuf::from);
    let aliases = args.aliases.clone().or(named).unwrap_or_else(|| {
        let etc = PathBuf::from("/etc/aliases");
        if etc.exists() { etc } else { args.mail_dir.join("aliases") }
    });
    read("aliases", &aliases);
    if let Ok(conf) = std::fs::read_to_string(&args.opendkim) {
        for (name, path) in postern_import::referenced_tables(&conf) {
            read(name, Path::new(&path));
        }
        read("opendkim.conf", &args.opendkim);
    }
    if let Ok(passwd) = std::fs::read_to_string(&args.passwd) {
        let accounts = |range: std::ops::Range<u32>| -> Vec<String> {
            passwd
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    let uid: u32 = f.get(2)?.parse().ok()?;
                    range.contains(&uid).then(|| f[0].to_lowercase())
                })
                .collect()
        };
        s.accounts = accounts(1000..60000);
        s.system_accounts = accounts(1..1000);
    }
    s
}

pub(crate) fn run(args: &SendmailImport) -> ExitCode {
    let sources = read_sources(args);
    if !sources.files.contains_key("sendmail.mc") {
        eprintln!(
            "postern: no {} (give sendmail's folder with --mail-dir)",
            args.mail_dir.join("sendmail.mc").display()
        );
        return ExitCode::from(2);
    }
    let config_path = args.out.join("postern.toml");
    if config_path.exists() {
        eprintln!("postern: {} exists; give an empty --out folder", config_path.display());
        return ExitCode::from(2);
    }
    let imported = postern_import::import(&sources);
    let report = imported.report.to_string();
    let written = std::fs::create_dir_all(&args.out)
        .and_then(|()| std::fs::write(&config_path, &imported.config))
        .and_then(|()| imported.tables.iter().try_for_each(|(name, text)| std::fs::write(args.out.join(name), text)))
        .and_then(|()| std::fs::write(args.out.join("import-report.txt"), &report));
    if let Err(e) = written {
        eprintln!("postern: writing {}: {e}", args.out.display());
        return ExitCode::FAILURE;
    }
    print!("{report}");
    println!("\nwritten: {} and {} table(s) in {}", config_path.display(), imported.tables.len(), args.out.display());
    match postern_config::load(&config_path) {
        Ok(_) => {
            println!("check-config: configuration OK; review it, then copy the folder to /etc/postern");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            eprintln!("the imported configuration needs the fixes above before it can run");
            ExitCode::from(2)
        }
    }
}
