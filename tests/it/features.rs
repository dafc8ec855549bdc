//! The cargo feature `emulator` decides whether the binary has the
//! `fake-google` subcommand: the default build (what the tests run) lists it;
//! a `--no-default-features` build (the Docker image's) does not, which
//! scripts/check-image checks on the release binary.

use std::process::Command;

fn help() -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_plansync"))
        .arg("--help")
        .output()
        .expect("plansync --help runs");
    assert!(output.status.success(), "plansync --help: {output:?}");
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

#[test]
fn the_fake_google_subcommand_follows_the_emulator_feature() {
    let help = help();
    // Every build has the worker's commands.
    assert!(help.contains("migrate"), "{help}");
    assert!(help.contains("run"), "{help}");
    assert_eq!(
        help.lines()
            .any(|line| line.trim_start().starts_with("fake-google ")),
        cfg!(feature = "emulator"),
        "{help}"
    );
}
