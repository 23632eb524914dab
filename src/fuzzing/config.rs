//! The `config` target: `--check` on arbitrary TOML.

use std::{path::PathBuf, sync::Arc};

use crate::{control::health, shard::Generation};

/// `ringside -c FILE --check` on `input` as FILE, without printing: the
/// file is read, validated and its TLS listeners built. The file sits in a
/// folder of its own, so relative paths in it name nothing.
pub fn check_config(input: &[u8]) {
    thread_local! {
        static FILE: PathBuf = {
            let dir = std::env::temp_dir()
                .join(format!("ringside-fuzz-config-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("create the fuzz config folder");
            dir.join("ringside.toml")
        };
    }
    FILE.with(|path| {
        std::fs::write(path, input).expect("write the fuzz config");
        match crate::control::start::load(path) {
            Ok((config, warnings)) => {
                // What start-up does next with a valid file.
                let health = Arc::new(health::Table::new(&config));
                let gen = Generation::new(Arc::new(config), health);
                assert!(gen
                    .config
                    .listeners
                    .iter()
                    .all(|l| l.tls.is_none() || l.acceptor.is_some()));
                std::hint::black_box(warnings.to_string());
            }
            Err(problems) => {
                assert!(!problems.list.is_empty(), "an error without a problem");
                std::hint::black_box(problems.to_string());
            }
        }
    });
}
