//! The Debian package: `cargo deb --no-build --fast` packs the release binary
//! (build it first: `cargo build --release`), and the .deb holds the
//! binary, the unit, the default config as a conffile, the man pages, the
//! logrotate file and the docs; unpacked into a scratch root its binary
//! runs, its default config passes `--check`, its unit passes
//! `systemd-analyze verify` and its man pages render without warnings.
//! Needs cargo-deb (`cargo install cargo-deb --locked`; .ci/run installs it).

use crate::common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// Builds the package into `dir` and returns its path.
fn build(dir: &Path) -> PathBuf {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let release = Path::new(manifest).join("target/release/ringside");
    assert!(
        release.exists(),
        "cargo build --release first: {} is missing",
        release.display()
    );
    let deb = dir.join("ringside.deb");
    let out = Command::new(env!("CARGO"))
        .args(["deb", "--no-build", "--fast", "--output"])
        .arg(&deb)
        .current_dir(manifest)
        .output()
        .expect("cargo");
    assert!(
        out.status.success(),
        "cargo deb failed (cargo-deb is needed: cargo install cargo-deb --locked): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    deb
}

#[test]
fn the_deb_holds_everything_and_what_it_installs_works() {
    let dir = TestDir::new();
    let deb = build(dir.path());
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for path in [
        "./usr/bin/ringside",
        "./usr/lib/systemd/system/ringside.service",
        "./etc/ringside/ringside.toml",
        "./etc/logrotate.d/ringside",
        "./usr/share/man/man8/ringside.8.gz",
        "./usr/share/man/man5/ringside.toml.5.gz",
        "./usr/share/doc/ringside/configuration.md",
        "./usr/share/doc/ringside/examples/README.md",
        "./usr/share/doc/ringside/examples/tls-termination.toml",
    ] {
        assert!(
            listing.contains(path),
            "the package lacks {path}:\n{listing}"
        );
    }
    let info = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    assert!(info.contains("Package: ringside"), "{info}");
    let conffiles = run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("conffiles"));
    assert!(
        conffiles.contains("/etc/ringside/ringside.toml"),
        "{conffiles}"
    );
    // The install creates the service's user.
    let postinst = run(Command::new("dpkg-deb").arg("-I").arg(&deb).arg("postinst"));
    assert!(
        postinst.contains("adduser --system --ingroup ringside"),
        "{postinst}"
    );

    // Unpacked into a scratch root.
    let root = dir.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let binary = root.join("usr/bin/ringside");
    let version = run(Command::new(&binary).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("ringside {}", env!("CARGO_PKG_VERSION"))
    );

    // The default config, with its log folder moved into the scratch root.
    let logs = root.join("var/log/ringside");
    std::fs::create_dir_all(&logs).unwrap();
    let config = std::fs::read_to_string(root.join("etc/ringside/ringside.toml")).unwrap();
    let config = config.replace("/var/log/ringside", logs.to_str().unwrap());
    let local = dir.write("ringside.toml", &config);
    let check = run(Command::new(&binary).arg("-c").arg(&local).arg("--check"));
    assert_eq!(check.trim(), format!("{}: ok", local.display()));

    let unit =
        std::fs::read_to_string(root.join("usr/lib/systemd/system/ringside.service")).unwrap();
    let unit = dir.write(
        "ringside.service",
        &unit.replace("/usr/bin/ringside", binary.to_str().unwrap()),
    );
    let verify = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit));
    assert!(verify.trim().is_empty(), "systemd-analyze verify: {verify}");

    for page in [
        "usr/share/man/man8/ringside.8.gz",
        "usr/share/man/man5/ringside.toml.5.gz",
    ] {
        let text = run(Command::new("gzip").arg("-dc").arg(root.join(page)));
        let plain = dir.write("page", &text);
        let warnings = run(Command::new("groff")
            .args(["-man", "-ww", "-z"])
            .arg(&plain));
        assert!(warnings.trim().is_empty(), "{page}: {warnings}");
    }
}
