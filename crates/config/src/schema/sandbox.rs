//! The folders the configured deliveries write: what a service manager's sandbox must leave
//! writable (systemd's `ReadWritePaths=` and `ProtectHome=`). `postern sandbox` prints them as
//! a drop-in for `postern.service`, and the Debian package's generator writes that drop-in at
//! boot and at every `systemctl daemon-reload`.

use std::path::{Path, PathBuf};

use super::{Config, LocalTransport};

/// Where the folders under users' homes are, as systemd's `ProtectHome=` hides them.
const HOME_ROOTS: [&str; 3] = ["/home", "/root", "/run/user"];

/// The folders a configuration's deliveries write, for the sandbox of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritePaths {
    /// Absolute folders, sorted, none inside another.
    pub paths: Vec<PathBuf>,
    /// Whether one of them is under `/home`, `/root` or `/run/user`: the sandbox must not hide
    /// the homes (systemd's `ProtectHome=no`).
    pub home: bool,
}

impl Config {
    /// The folders this configuration's deliveries write:
    /// - `data_dir` (the spool, the sockets, and Maildirs under it);
    /// - the folder of the `[delivery] maildir` or `mbox` template in use (`local = "maildir"`
    ///   or `"mbox"`): the part before `{mailbox}`, up to its last `/`;
    /// - with `[delivery] allow_pipes`, `/var/mail` and `/home`: a command such as procmail
    ///   runs as the recipient and writes there (Debian's `ORGMAIL` and `$HOME/Mail`).
    ///
    /// LMTP writes nothing (the mailbox server does).
    pub fn write_paths(&self) -> WritePaths {
        let mut paths = vec![self.data_dir.clone()];
        let template = match self.delivery.local {
            LocalTransport::Maildir => Some(&self.delivery.maildir),
            LocalTransport::Mbox => Some(&self.delivery.mbox),
            LocalTransport::Lmtp => None,
        };
        if let Some(t) = template {
            paths.push(template_folder(&t.replace("{data_dir}", &self.data_dir.to_string_lossy())));
        }
        if self.delivery.allow_pipes {
            paths.extend([PathBuf::from("/var/mail"), PathBuf::from("/home")]);
        }
        paths.sort();
        paths.dedup();
        let outermost: Vec<PathBuf> =
            paths.iter().filter(|p| !paths.iter().any(|q| q != *p && p.starts_with(q))).cloned().collect();
        let home = outermost.iter().any(|p| HOME_ROOTS.iter().any(|h| p.starts_with(h)));
        WritePaths { paths: outermost, home }
    }
}

/// The folder a path template writes under: the text before `{mailbox}` up to its last `/`
/// (`/var/mail/{mailbox}` → `/var/mail`, `/home/{mailbox}/Maildir` → `/home`).
fn template_folder(template: &str) -> PathBuf {
    let fixed = template.split("{mailbox}").next().unwrap_or(template);
    match fixed.rfind('/') {
        Some(0) | None => PathBuf::from("/"),
        Some(i) if template.contains("{mailbox}") => PathBuf::from(&fixed[..i]),
        Some(_) => Path::new(fixed).parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(delivery: &str) -> Config {
        let text = format!("data_dir = \"/var/lib/postern\"\n[delivery]\n{delivery}\n");
        crate::parse_str(&text, Path::new("/etc/postern/postern.toml"), Path::new("/etc/postern")).unwrap().0
    }

    fn paths(w: &WritePaths) -> Vec<&str> {
        w.paths.iter().map(|p| p.to_str().unwrap()).collect()
    }

    #[test]
    fn maildir_under_data_dir_needs_data_dir_only() {
        let w = config("").write_paths();
        assert_eq!(paths(&w), ["/var/lib/postern"]);
        assert!(!w.home);
    }

    #[test]
    fn mbox_in_var_mail_opens_var_mail() {
        let w = config("local = \"mbox\"").write_paths();
        assert_eq!(paths(&w), ["/var/lib/postern", "/var/mail"]);
        assert!(!w.home);
    }

    #[test]
    fn maildir_in_homes_opens_home() {
        let w = config("maildir = \"/home/{mailbox}/Maildir\"").write_paths();
        assert_eq!(paths(&w), ["/home", "/var/lib/postern"]);
        assert!(w.home);
        let w = config("maildir = \"/srv/mail/box-{mailbox}\"").write_paths();
        assert_eq!(paths(&w), ["/srv/mail", "/var/lib/postern"]);
    }

    #[test]
    fn pipes_open_var_mail_and_home() {
        let w = config("allow_pipes = true\nlocal = \"lmtp\"").write_paths();
        assert_eq!(paths(&w), ["/home", "/var/lib/postern", "/var/mail"]);
        assert!(w.home);
    }

    #[test]
    fn a_folder_inside_another_is_not_repeated() {
        let w = config("local = \"mbox\"\nmbox = \"{data_dir}/mbox/{mailbox}\"").write_paths();
        assert_eq!(paths(&w), ["/var/lib/postern"]);
    }
}
