//! The Debian package and the container image: the package cargo-deb makes from the binary this
//! test run built (no release build), installed with dpkg on this machine, its unit checked by
//! systemd-analyze and its binary run the way the unit runs it; the Containerfile read for what
//! it promises, and its health check run against a real server.
//!
//! Installing needs root, dpkg and cargo-deb (`bash .ci/package.sh`); each is a skip outside CI
//! and a failure under it. Installing again over an installed package is what an upgrade does,
//! so a second run on the same machine tests that too.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use jobwarden_testkit::process::{Jobwarden, Running};

use crate::helpers::skip_unless_ci;

const BIN: &str = env!("CARGO_BIN_EXE_jobwarden");
const INSTALLED_BIN: &str = "/usr/bin/jobwarden";
const INSTALLED_CONFIG: &str = "/etc/jobwarden/config.toml";
const STATE_DIR: &str = "/var/lib/jobwarden";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Prints why a test does not run here, or fails it under CI, where everything must run.
fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `program args…`, which must succeed; its stdout.
fn run_ok(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

/// cargo-deb as `.ci/package.sh` installs it, else on PATH.
fn cargo_deb() -> Option<PathBuf> {
    let cache =
        std::env::var("JOBWARDEN_CI_CACHE").unwrap_or_else(|_| "/var/cache/jobwarden-ci".into());
    Some(Path::new(&cache).join("cargo-deb/bin/cargo-deb"))
        .filter(|p| p.is_file())
        .or_else(|| on_path("cargo-deb"))
}

/// The target directory and the profile directory the test binary was built in
/// (`…/target`, `debug`): where cargo-deb is pointed, so that it packages that very file.
fn target_of_test_binary() -> (PathBuf, String) {
    let bin = Path::new(BIN);
    let profile_dir = bin.parent().expect("the binary's directory");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a profile directory")
        .to_owned();
    (profile_dir.parent().unwrap().to_owned(), profile)
}

/// The .deb built once for the whole run, `None` where cargo-deb is missing.
fn deb() -> Option<&'static Path> {
    static DEB: OnceLock<Option<PathBuf>> = OnceLock::new();
    DEB.get_or_init(build_deb).as_deref()
}

fn build_deb() -> Option<PathBuf> {
    let Some(cargo_deb) = cargo_deb() else {
        skip_unless_ci(
            "the Debian package tests",
            "cargo-deb is not installed (run `bash .ci/package.sh`)",
        );
        return None;
    };
    let (target_dir, profile) = target_of_test_binary();
    // cargo-deb names the dev profile's directory `debug`, as cargo does.
    let profile = if profile == "debug" { "dev" } else { &profile };
    let out_dir = target_dir.join("package-test");
    let _ = std::fs::remove_dir_all(&out_dir);
    let started = Instant::now();
    let out = Command::new(&cargo_deb)
        .arg("--manifest-path")
        .arg(repo("Cargo.toml"))
        .args(["--no-build", "--profile", profile, "--fast", "--output"])
        .arg(&out_dir)
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo-deb: {}\n{}",
        out.status,
        text(&out)
    );
    eprintln!("cargo-deb built the package in {:?}", started.elapsed());
    let deb = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap_or_else(|| panic!("no .deb in {}:\n{}", out_dir.display(), text(&out)));
    Some(deb)
}

/// The package installed on this machine once for the whole run (over any installed
/// version), `None` where it cannot be here.
fn installed() -> Option<&'static Path> {
    static INSTALLED: OnceLock<Option<PathBuf>> = OnceLock::new();
    INSTALLED.get_or_init(install).as_deref()
}

fn install() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        skip_unless_ci(
            "installing the Debian package",
            "dpkg -i needs root; these tests run as another user",
        );
        return None;
    }
    let deb = deb()?;
    dpkg_install(deb);
    Some(deb.to_owned())
}

/// `dpkg --install`, which must succeed. A conffile changed both here and in the package is
/// replaced by the package's (the old one kept as .dpkg-old): no prompt, and the tests check
/// the repository's config.
fn dpkg_install(deb: &Path) {
    let out = Command::new("dpkg")
        .args(["--install", "--force-confnew"])
        .arg(deb)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dpkg --install {}: {}\n{}",
        deb.display(),
        out.status,
        text(&out)
    );
}

fn jobwarden_ids() -> (u32, u32) {
    let entry = run_ok("getent", &["passwd", "jobwarden"]);
    let fields: Vec<&str> = entry.trim().split(':').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

/// The installed unit file, wherever the package put it (/lib or /usr/lib).
fn installed_unit() -> PathBuf {
    run_ok("dpkg", &["--listfiles", "jobwarden"])
        .lines()
        .find(|line| line.ends_with("/systemd/system/jobwarden.service"))
        .map(PathBuf::from)
        .expect("the package installs jobwarden.service")
}

#[test]
fn the_deb_package_holds_the_binary_the_unit_the_config_and_the_postinst() {
    let Some(deb) = deb() else { return };
    let deb = deb.to_str().unwrap();
    let contents = run_ok("dpkg-deb", &["--contents", deb]);
    let files: Vec<&str> = contents
        .lines()
        .filter_map(|line| line.split_whitespace().last())
        .collect();
    for expected in [
        "./usr/bin/jobwarden",
        "./etc/jobwarden/config.toml",
        "./usr/share/doc/jobwarden/README.md",
    ] {
        assert!(files.contains(&expected), "{expected} not in:\n{contents}");
    }
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("/systemd/system/jobwarden.service")),
        "no unit in:\n{contents}"
    );
    // dpkg keeps an administrator's changes to a conffile on upgrade.
    let conffiles = run_ok("dpkg-deb", &["--info", deb, "conffiles"]);
    assert_eq!(conffiles.trim(), INSTALLED_CONFIG);
    let postinst = run_ok("dpkg-deb", &["--info", deb, "postinst"]);
    assert!(postinst.contains("useradd --system"), "{postinst}");
    let depends = run_ok("dpkg-deb", &["--field", deb, "Depends"]);
    assert!(
        depends.contains("libc6") && depends.contains("passwd"),
        "Depends: {depends}"
    );
}

#[test]
fn installing_the_package_creates_the_jobwarden_system_user_and_its_state_directory() {
    if installed().is_none() {
        return;
    }
    let entry = run_ok("getent", &["passwd", "jobwarden"]);
    let fields: Vec<&str> = entry.trim().split(':').collect();
    let (uid, gid) = jobwarden_ids();
    // Debian's system users are below 1000 (SYS_UID_MAX in /etc/login.defs).
    assert!(uid < 1000, "not a system user: {entry}");
    assert_eq!(fields[5], STATE_DIR, "{entry}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "{entry}");
    let group = run_ok("getent", &["group", "jobwarden"]);
    assert_eq!(
        group.split(':').nth(2),
        Some(gid.to_string().as_str()),
        "{group}"
    );
    let state = std::fs::metadata(STATE_DIR).unwrap();
    assert_eq!(
        (state.uid(), state.gid()),
        (uid, gid),
        "{STATE_DIR} is not the user's"
    );
}

#[test]
fn the_installed_config_is_readable_by_the_service_user_and_no_one_else() {
    if installed().is_none() {
        return;
    }
    let meta = std::fs::metadata(INSTALLED_CONFIG).unwrap();
    let (_, gid) = jobwarden_ids();
    assert_eq!((meta.uid(), meta.gid()), (0, gid), "not root:jobwarden");
    assert_eq!(meta.mode() & 0o777, 0o640);
}

#[test]
fn installing_the_package_again_keeps_its_user_and_its_config() {
    let Some(deb) = installed() else { return };
    let before = jobwarden_ids();
    let config = std::fs::read(INSTALLED_CONFIG).unwrap();
    dpkg_install(deb);
    assert_eq!(jobwarden_ids(), before);
    assert_eq!(std::fs::read(INSTALLED_CONFIG).unwrap(), config);
    let meta = std::fs::metadata(INSTALLED_CONFIG).unwrap();
    assert_eq!((meta.gid(), meta.mode() & 0o777), (before.1, 0o640));
}

#[test]
fn the_installed_unit_passes_systemd_analyze_verify() {
    if installed().is_none() {
        return;
    }
    let unit = installed_unit();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    // An unknown or misspelt directive is only a warning: any line about the unit fails.
    let said = text(&out);
    assert!(
        out.status.success() && !said.contains("jobwarden"),
        "systemd-analyze verify {}: {}\n{said}",
        unit.display(),
        out.status
    );
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "ExecStart=/usr/bin/jobwarden --config /etc/jobwarden/config.toml run",
        "User=jobwarden",
        "StateDirectory=jobwarden",
    ] {
        assert!(
            unit_text.lines().any(|l| l == line),
            "no {line:?} in {unit_text}"
        );
    }
}

#[test]
fn the_installed_binary_answers_version_and_checks_its_config_as_the_service_user() {
    if installed().is_none() {
        return;
    }
    let version = run_ok(INSTALLED_BIN, &["--version"]);
    assert_eq!(version.trim(), run_ok(BIN, &["--version"]).trim());
    let out = as_service_user(INSTALLED_BIN)
        .args(["--config", INSTALLED_CONFIG, "check-config"])
        .output()
        .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "check-config: {}\n{said}", out.status);
    assert!(
        said.contains(&format!("file: {INSTALLED_CONFIG}")),
        "not the installed config:\n{said}"
    );
    assert!(
        said.contains("url = \"sqlite:///var/lib/jobwarden/jobwarden.db?mode=rwc\""),
        "{said}"
    );
}

/// `program` run as the `jobwarden` user, as the unit's User= and Group= run it; none of the
/// caller's JOBWARDEN__ variables.
fn as_service_user(program: &str) -> Command {
    let mut command = Jobwarden::new("setpriv").command();
    command
        .args([
            "--reuid=jobwarden",
            "--regid=jobwarden",
            "--init-groups",
            "--",
            program,
        ])
        .env_remove("JOBWARDEN__HTTP__BIND")
        .current_dir(STATE_DIR);
    command
}

#[test]
fn the_installed_service_runs_as_its_user_on_the_packaged_config_and_turns_healthy() {
    if installed().is_none() {
        return;
    }
    // The unit's command, as its user in its working directory; only the port is the test's,
    // so that it never meets another jobwarden on 9464.
    let mut command = as_service_user(INSTALLED_BIN);
    command
        .args(["--config", INSTALLED_CONFIG])
        .env("JOBWARDEN__HTTP__BIND", "127.0.0.1:0");
    let mut service = Running::start(command);
    let address = service.http_address();
    let status = std::fs::read_to_string(format!("/proc/{}/status", service.pid())).unwrap();
    let user = run_ok("id", &["-u", "jobwarden"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some(user.trim())),
        "not running as jobwarden:\n{status}"
    );
    wait_for_health(&address, Duration::from_secs(60));
    assert!(Path::new(STATE_DIR).join("jobwarden.db").exists());
    let (exit, log) = service.stop(Duration::from_secs(30));
    assert!(exit.success(), "exit {exit:?}:\n{log}");
}

/// The image's health check, run on this machine with the bind it would see.
fn health_check(bind: &str) -> Output {
    Command::new("bash")
        .arg(repo("deploy/container/healthcheck"))
        .env("JOBWARDEN__HTTP__BIND", bind)
        .output()
        .unwrap()
}

fn wait_for_health(bind: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let out = health_check(bind);
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the health check did not pass within {limit:?} on {bind}: {}\n{}",
            out.status,
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_health_check_passes_on_a_ready_service_of_the_tests_own_build() {
    let dir = crate::binary::workdir();
    let mut service = Jobwarden::new(BIN).current_dir(dir.path()).start();
    let address = service.http_address();
    wait_for_health(&address, Duration::from_secs(60));
    let (exit, log) = service.stop(Duration::from_secs(30));
    assert!(exit.success(), "exit {exit:?}:\n{log}");
}

#[test]
fn the_health_check_fails_on_a_503_and_where_nothing_listens() {
    // A server that answers every request as a jobwarden that is not ready does.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut request_line = String::new();
            let _ = BufReader::new(&stream).read_line(&mut request_line);
            let _ = stream.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    let not_ready = health_check(&format!("0.0.0.0:{}", address.port()));
    assert!(!not_ready.status.success(), "{}", text(&not_ready));

    let port = jobwarden_testkit::free_port();
    let nothing = health_check(&format!("0.0.0.0:{port}"));
    assert!(!nothing.status.success(), "{}", text(&nothing));
}

/// The Containerfile's instructions, continuation lines joined and comments dropped.
fn containerfile() -> Vec<String> {
    let text = std::fs::read_to_string(repo("Containerfile")).unwrap();
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    instructions
}

/// The instructions of the last stage, the image itself.
fn final_stage() -> Vec<String> {
    let all = containerfile();
    let last_from = all.iter().rposition(|i| i.starts_with("FROM ")).unwrap();
    all[last_from..].to_vec()
}

fn instruction<'a>(stage: &'a [String], keyword: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter_map(|i| i.strip_prefix(keyword))
        .filter_map(|rest| rest.strip_prefix(' '))
        .collect()
}

#[test]
fn the_containerfile_builds_the_dist_profile_on_bookworm_and_ships_it_on_bookworm_slim() {
    let all = containerfile();
    let froms = instruction(&all, "FROM");
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(
        froms[0].starts_with("docker.io/library/rust:")
            && froms[0].ends_with("-bookworm AS builder"),
        "{froms:?}"
    );
    assert_eq!(froms[1], "docker.io/library/debian:bookworm-slim");
    assert!(
        all.iter().any(|i| i.starts_with("RUN ")
            && i.contains("cargo build --profile dist --locked -p jobwarden")
            && i.contains("target/dist/jobwarden /out/jobwarden")),
        "{all:#?}"
    );
    let stage = final_stage();
    assert!(
        instruction(&stage, "COPY").contains(&"--from=builder /out/jobwarden /usr/bin/jobwarden"),
        "{stage:#?}"
    );
    // The image installs nothing but the CA certificates.
    let installs: Vec<&str> = instruction(&stage, "RUN")
        .into_iter()
        .filter(|r| r.contains("apt-get install"))
        .collect();
    assert_eq!(installs.len(), 1, "{installs:?}");
    let packages: Vec<&str> = installs[0]
        .split("apt-get install")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .take_while(|w| *w != "&&")
        .filter(|w| !w.starts_with('-'))
        .collect();
    assert_eq!(packages, ["ca-certificates"]);
    // The build context leaves the workspace's build output behind.
    let ignored = std::fs::read_to_string(repo(".dockerignore")).unwrap();
    assert!(ignored.lines().any(|l| l == "/target"), "{ignored}");
}

#[test]
fn the_image_runs_as_a_fixed_non_root_user_owning_its_state_volume() {
    let stage = final_stage();
    let uid = instruction(&stage, "ARG")
        .iter()
        .find_map(|a| a.strip_prefix("JOBWARDEN_UID="))
        .expect("ARG JOBWARDEN_UID=…")
        .to_owned();
    assert_ne!(uid, "0");
    assert_eq!(
        instruction(&stage, "USER"),
        ["${JOBWARDEN_UID}:${JOBWARDEN_UID}"]
    );
    let user_setup = instruction(&stage, "RUN")
        .into_iter()
        .find(|r| r.contains("useradd"))
        .expect("a RUN making the user");
    assert!(
        user_setup.contains("--uid \"$JOBWARDEN_UID\"")
            && user_setup
                .contains("install -d -o jobwarden -g jobwarden -m 0750 /var/lib/jobwarden"),
        "{user_setup}"
    );
    assert_eq!(instruction(&stage, "VOLUME"), [STATE_DIR]);
    assert_eq!(instruction(&stage, "WORKDIR"), [STATE_DIR]);
}

#[test]
fn the_image_reads_the_packaged_config_listening_on_the_port_it_exposes() {
    let stage = final_stage();
    assert!(
        instruction(&stage, "COPY").contains(&"deploy/config.toml /etc/jobwarden/config.toml"),
        "{stage:#?}"
    );
    let env: Vec<(String, String)> = instruction(&stage, "ENV")
        .iter()
        .flat_map(|e| e.split_whitespace())
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let value = |key: &str| {
        env.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no ENV {key} in {env:?}"))
    };
    assert_eq!(value("JOBWARDEN_CONFIG"), INSTALLED_CONFIG);
    // The packaged config with the image's variables, as the binary in the image loads it.
    let overrides = env
        .iter()
        .filter(|(k, _)| k.starts_with("JOBWARDEN__"))
        .cloned();
    let loaded =
        jobwarden::config::load_with_env(Some(&repo("deploy/config.toml")), overrides).unwrap();
    let bind = &loaded.settings.http.bind;
    assert!(bind.starts_with("0.0.0.0:"), "listens on {bind:?}");
    let port = bind.rsplit(':').next().unwrap();
    assert_eq!(instruction(&stage, "EXPOSE"), [port]);
    assert!(
        loaded
            .settings
            .database
            .url
            .expose()
            .starts_with("sqlite:///var/lib/jobwarden/"),
        "the database is not on the volume"
    );
    let health = instruction(&stage, "HEALTHCHECK");
    assert_eq!(health.len(), 1, "{stage:#?}");
    assert!(
        health[0].ends_with("CMD [\"/usr/local/bin/jobwarden-healthcheck\"]"),
        "{health:?}"
    );
    assert!(
        instruction(&stage, "COPY")
            .contains(&"deploy/container/healthcheck /usr/local/bin/jobwarden-healthcheck"),
        "{stage:#?}"
    );
}
