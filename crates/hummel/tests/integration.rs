//! Integration tests: the real `hummel` binary, run as separate processes on 127.0.0.1 with
//! port 0. Each test gets its own temp folder; on failure the harness prints the command, its
//! output and the server logs.

mod integration {
    pub mod util;
    pub mod wine;

    mod auth;
    mod build_safety;
    mod cli;
    mod dashboard;
    mod datadir;
    mod drain;
    mod e2e;
    mod evil;
    mod faults;
    mod fetchable;
    mod gc;
    mod history;
    mod ownership;
    mod player;
    mod push;
    mod push_progress;
    mod repack;
    mod serve;
    mod sets;
    mod shutdown;
    mod signing;
    mod surface;
    mod tls;
    mod watch;
    mod windows;
}
