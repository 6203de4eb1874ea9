//! Postern's integration tests: the real `postern` binary on an ephemeral loopback port, driven by
//! real clients (our dialog runner, lettre, Python's smtplib). One test binary; support code in
//! `support/`, data in `tests/dialogs`, `tests/fixtures`, `tests/bad-config`.

#![allow(unreachable_pub, dead_code)]

mod support;

mod alerts;
mod arc;
mod authentication;
mod bounces;
mod cluster;
mod config;
mod corpus;
mod crash;
#[cfg(feature = "failpoints")]
mod crash_points;
mod dane;
mod debian;
mod delivery;
mod deploy;
mod dialogs;
mod dns;
mod doctor;
mod forwarding;
mod hardening;
mod import;
mod layering;
mod lmtp;
mod logging;
mod metrics;
mod milters;
mod mta_sts;
mod pipes;
mod policy;
mod python;
mod queue_tools;
mod racing;
mod relay;
mod requiretls;
mod route;
mod scheduling;
mod sendmail;
mod spf_suite;
mod tls;
mod tls_policy;
mod tls_rpt;
mod upgrade;
