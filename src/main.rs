//! The command line: `ringside [-c FILE] [--check] [--upgrade-socket PATH]`.

use std::path::PathBuf;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: ringside [-c FILE | --config FILE] [--check] [--upgrade-socket PATH]

  -c, --config FILE   the config file (default ./ringside.toml)
      --check         validate FILE and exit: 0 and `FILE: ok`, or 1 and every problem
      --upgrade-socket PATH
                      binary upgrade: take over the listeners of the ringside serving
                      on PATH (which then drains and exits), and serve PATH for the next
  -h, --help          this text
  -V, --version       the version";

fn main() {
    let mut config = PathBuf::from("ringside.toml");
    let mut check = false;
    let mut upgrade: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-c" | "--config" => match args.next() {
                Some(f) => config = PathBuf::from(f),
                None => usage_error("-c needs a file"),
            },
            "--check" => check = true,
            "--upgrade-socket" => match args.next() {
                Some(p) => upgrade = Some(PathBuf::from(p)),
                None => usage_error("--upgrade-socket needs a path"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            "-V" | "--version" => {
                println!("ringside {}", env!("CARGO_PKG_VERSION"));
                return;
            }
            other => match other.strip_prefix("--config=") {
                Some(f) => config = PathBuf::from(f),
                None => usage_error(&format!("unknown argument {other}")),
            },
        }
    }
    let code = if check {
        ringside::control::check(&config)
    } else {
        ringside::run(&config, upgrade.as_deref())
    };
    // Exit without running destructors: workers may still hold idle
    // connections, which the kernel closes with the process.
    std::process::exit(code);
}

fn usage_error(msg: &str) -> ! {
    eprintln!("ringside: {msg}\n{USAGE}");
    std::process::exit(2);
}
