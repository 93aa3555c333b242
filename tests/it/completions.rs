//! Shell completions and the man pages, as the real executable prints them and as a real bash
//! and groff read them: generated from the clap definitions, so they cannot drift from the parser.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::CommandFactory;
use jobwarden::cli::Cli;

const BIN: &str = env!("CARGO_BIN_EXE_jobwarden");

/// `jobwarden ARGS…` run to its end in an empty directory, with none of the caller's
/// configuration.
fn jobwarden(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    jobwarden_testkit::process::Jobwarden::new(BIN)
        .current_dir(dir.path())
        .command()
        .args(args)
        .output()
        .unwrap()
}

/// Its stdout, after asserting that it succeeded and said nothing on stderr.
fn printed(args: &[&str]) -> String {
    let out = jobwarden(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "jobwarden {args:?}: {:?}\n{stderr}",
        out.status
    );
    assert!(
        stderr.is_empty(),
        "jobwarden {args:?} wrote to stderr:\n{stderr}"
    );
    String::from_utf8(out.stdout).unwrap()
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// What bash offers for the last word of `line` once `script` is loaded: its completion
/// function for `jobwarden`, called as readline would call it on TAB.
fn bash_completions(script: &Path, line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let driver = r#"
        source "$1" || exit 10
        line="$2"
        read -r -a COMP_WORDS <<< "$line"
        COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
        COMP_LINE="$line"
        COMP_POINT=${#COMP_LINE}
        spec=$(complete -p jobwarden) || exit 11
        function=$(sed -n 's/.* -F \([^ ]*\) .*/\1/p' <<< "$spec")
        [ -n "$function" ] || exit 12
        "$function" jobwarden "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", driver, "bash"])
        .arg(script)
        .arg(words.join(" "))
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "bash could not complete {line:?} ({:?}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_jobs_tr_to_track() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("jobwarden.bash");
    std::fs::write(&script, printed(&["completions", "bash"])).unwrap();
    assert_eq!(bash_completions(&script, "jobwarden jobs tr"), ["track"]);
}

#[test]
fn zsh_and_fish_scripts_complete_the_jobwarden_command_and_its_subcommands() {
    let zsh = printed(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef jobwarden"), "{zsh}");
    let fish = printed(&["completions", "fish"]);
    assert!(fish.contains("complete -c jobwarden"), "{fish}");
    for script in [&zsh, &fish] {
        for subcommand in [
            "jobs",
            "track",
            "notifications",
            "resend",
            "completions",
            "man",
        ] {
            assert!(script.contains(subcommand), "no {subcommand} in:\n{script}");
        }
    }
}

#[test]
fn completions_and_man_page_are_printed_even_when_the_config_file_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("config.toml");
    std::fs::write(&broken, "this is [not toml").unwrap();
    let broken = broken.to_str().unwrap();
    for args in [
        &["--config", broken, "completions", "bash"][..],
        &["--config", broken, "man"][..],
    ] {
        let out = jobwarden(args);
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "jobwarden {args:?}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn man_page_is_roff_naming_every_subcommand() {
    let page = printed(&["man"]);
    assert!(page.contains(".TH jobwarden 1"), "no title line:\n{page}");
    assert!(page.contains(".SH SYNOPSIS"), "{page}");
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    let top = Cli::command();
    for subcommand in top.get_subcommands() {
        let name = subcommand.get_name();
        assert!(
            page.contains(&format!("jobwarden\\-{}(1)", name.replace('-', "\\-"))),
            "the SUBCOMMANDS section does not name {name}:\n{page}"
        );
    }
}

#[test]
fn man_out_dir_writes_a_page_for_every_subcommand_and_prints_each_path() {
    let dir = tempfile::tempdir().unwrap();
    let listed = printed(&["man", "--out-dir", dir.path().to_str().unwrap()]);
    let listed: Vec<&str> = listed.lines().collect();
    for page in [
        "jobwarden.1",
        "jobwarden-jobs.1",
        "jobwarden-jobs-track.1",
        "jobwarden-notifications-resend.1",
        "jobwarden-completions.1",
    ] {
        let path = dir.path().join(page);
        assert!(path.is_file(), "{page} not written; listed {listed:?}");
        assert!(
            listed.contains(&path.to_str().unwrap()),
            "{page} not listed: {listed:?}"
        );
    }
    assert!(
        !dir.path().join("jobwarden-help.1").exists(),
        "clap's help subcommand is --help, not a page of its own"
    );
}

#[test]
fn man_page_renders_with_groff_without_warnings() {
    let Some(groff) = on_path("groff") else {
        eprintln!("SKIPPED rendering the man page: groff is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("jobwarden.1");
    std::fs::write(&page, printed(&["man"])).unwrap();
    // -k: through preconv, as man(1) reads a page, so UTF-8 in a help text is no error;
    // -P-cbou: plain text, without the overstrikes grotty uses for bold and italics.
    let out = Command::new(groff)
        .args(["-k", "-man", "-Tutf8", "-ww", "-P-cbou"])
        .arg(&page)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "groff: {:?}\n{stderr}",
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for heading in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SUBCOMMANDS"] {
        assert!(
            text.contains(heading),
            "no {heading} in the rendered page:\n{text}"
        );
    }
    assert!(text.contains("JOBWARDEN_CONFIG"), "{text}");
}

#[test]
fn help_lists_completions_and_man_with_what_they_print() {
    let help = printed(&["--help"]);
    let line = |name: &str| {
        help.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in --help:\n{help}"))
            .to_owned()
    };
    assert!(line("completions").contains("completion script"), "{help}");
    assert!(line("man").contains("man page"), "{help}");
}
