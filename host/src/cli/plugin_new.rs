//! `notify-host plugin new`: writes a working webhook-style channel plugin
//! skeleton in Rust, Python or JavaScript, ready to build and to test with
//! `notify-host plugin test`.
//!
//! Invariants: the skeleton's `wit/channel.wit` is the contract this binary
//! speaks (embedded at compile time from the repository's `wit/`, never a
//! copy that could drift); nothing that exists is overwritten: the target
//! directory must be absent or empty, and every file is created new.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

/// The contract this host speaks, for the skeleton's bindings.
const CHANNEL_WIT: &str = include_str!("../../../wit/channel.wit");

/// Longest plugin name accepted: it names a directory, a file, a crate
/// and a config key, and longer ones help none of them.
const MAX_NAME_CHARS: usize = 64;

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The plugin's name: lower-case letters, digits, `-` and `_`, starting
    /// with a letter. It names the directory, the .wasm file and what the
    /// plugin's describe() returns.
    name: String,
    /// The language of the skeleton.
    #[arg(long, value_enum)]
    lang: Lang,
    /// The directory to create the plugin's directory NAME in.
    #[arg(long, value_name = "PARENT", default_value = ".")]
    dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Lang {
    /// Rust with wit-bindgen 0.63, built for wasm32-wasip2.
    Rust,
    /// Python, built with componentize-py 0.25.1.
    Python,
    /// JavaScript, built with jco 1.35.0 (`jco componentize`).
    Js,
}

impl Lang {
    fn title(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        }
    }

    /// What building needs, said after the files are written.
    fn toolchain(self) -> &'static str {
        match self {
            Lang::Rust => "cargo and the wasm32-wasip2 target (build.sh adds it with rustup)",
            Lang::Python => "componentize-py 0.25.1 ($NOTIFY_COMPONENTIZE_PY, or on PATH: pip install componentize-py==0.25.1)",
            Lang::Js => "jco 1.35.0 with componentize-js ($NOTIFY_JCO, or on PATH: npm install @bytecodealliance/jco@1.35.0 @bytecodealliance/componentize-js@0.22)",
        }
    }
}

/// One file of a skeleton: where it goes and its text, with placeholders.
struct Template {
    path: &'static str,
    text: &'static str,
    executable: bool,
}

const fn file(path: &'static str, text: &'static str) -> Template {
    Template {
        path,
        text,
        executable: false,
    }
}

const fn script(path: &'static str, text: &'static str) -> Template {
    Template {
        path,
        text,
        executable: true,
    }
}

/// The cases every skeleton passes out of the box: the three languages'
/// plugins behave the same.
const CASES: [Template; 3] = [
    file(
        "cases/01-confirmation.json",
        include_str!("templates/common/cases/01-confirmation.json"),
    ),
    file(
        "cases/02-reminder.json",
        include_str!("templates/common/cases/02-reminder.json"),
    ),
    file(
        "cases/03-bad-settings.json",
        include_str!("templates/common/cases/03-bad-settings.json"),
    ),
];

fn templates(lang: Lang) -> Vec<Template> {
    let own = match lang {
        Lang::Rust => vec![
            file("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
            file("src/lib.rs", include_str!("templates/rust/src/lib.rs")),
            file(".gitignore", include_str!("templates/rust/gitignore")),
            script("build.sh", include_str!("templates/rust/build.sh")),
            file("README.md", include_str!("templates/rust/README.md")),
        ],
        Lang::Python => vec![
            file("app.py", include_str!("templates/python/app.py")),
            file(".gitignore", include_str!("templates/python/gitignore")),
            script("build.sh", include_str!("templates/python/build.sh")),
            file("README.md", include_str!("templates/python/README.md")),
        ],
        Lang::Js => vec![
            file("app.js", include_str!("templates/js/app.js")),
            file(
                "jco-preopens.mjs",
                include_str!("templates/js/jco-preopens.mjs"),
            ),
            script("build.sh", include_str!("templates/js/build.sh")),
            file("README.md", include_str!("templates/js/README.md")),
        ],
    };
    own.into_iter()
        .chain([file("wit/channel.wit", CHANNEL_WIT)])
        .chain(CASES)
        .collect()
}

pub fn run(args: &NewArgs) -> Result<ExitCode> {
    check_name(&args.name, args.lang)?;
    let target = args.dir.join(&args.name);
    refuse_if_taken(&target)?;
    let crate_name = args.name.replace('-', "_");
    let env_name = crate_name.to_ascii_uppercase();
    let contract = contract_version();
    let fill = |text: &str| {
        text.replace("{{name}}", &args.name)
            .replace("{{crate_name}}", &crate_name)
            .replace("{{env_name}}", &env_name)
            .replace("{{contract}}", contract)
    };

    std::fs::create_dir_all(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let mut written = Vec::new();
    for t in templates(args.lang) {
        let path = target.join(t.path);
        // The WIT file is the contract itself, copied as it is.
        let text = if t.path.ends_with(".wit") {
            t.text.to_string()
        } else {
            fill(t.text)
        };
        write_new(&path, &text, t.executable)?;
        written.push(path);
    }

    println!(
        "created {} ({} webhook plugin skeleton):",
        target.display(),
        args.lang.title()
    );
    for path in &written {
        println!("  {}", path.display());
    }
    println!();
    println!("building needs {}", args.lang.toolchain());
    println!("next:");
    println!("  {}", target.join("build.sh").display());
    println!(
        "  notify-host plugin test --plugin {} --cases {}",
        target.join(format!("{}.wasm", args.name)).display(),
        target.join("cases").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `notify:channel@X.Y.Z`, from the embedded WIT's `package` line.
fn contract_version() -> &'static str {
    CHANNEL_WIT
        .lines()
        .find_map(|l| l.trim().strip_prefix("package "))
        .map(|p| p.trim_end_matches(';').trim())
        .unwrap_or("notify:channel")
}

/// The name goes into file names, a Rust crate name and config keys, so it
/// is held to what all of them accept.
fn check_name(name: &str, lang: Lang) -> Result<()> {
    let mut chars = name.chars();
    let well_formed = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.chars().count() <= MAX_NAME_CHARS;
    if !well_formed {
        bail!(
            "plugin name {name:?}: use lower-case letters, digits, `-` and `_`, starting with a letter, at most {MAX_NAME_CHARS} characters (e.g. `acme-webhook`)"
        );
    }
    // A crate with one of these names would shadow a standard crate or
    // not compile; channel names have no such limit, so say it plainly.
    const RUST_RESERVED: &[&str] = &[
        "alloc",
        "core",
        "proc_macro",
        "std",
        "test",
        "as",
        "async",
        "await",
        "box",
        "break",
        "const",
        "continue",
        "crate",
        "do",
        "dyn",
        "else",
        "enum",
        "extern",
        "false",
        "final",
        "fn",
        "for",
        "if",
        "impl",
        "in",
        "let",
        "loop",
        "macro",
        "match",
        "mod",
        "move",
        "mut",
        "override",
        "priv",
        "pub",
        "ref",
        "return",
        "self",
        "static",
        "struct",
        "super",
        "trait",
        "true",
        "try",
        "type",
        "typeof",
        "unsafe",
        "unsized",
        "use",
        "virtual",
        "where",
        "while",
        "yield",
    ];
    if lang == Lang::Rust && RUST_RESERVED.contains(&name.replace('-', "_").as_str()) {
        bail!("plugin name {name:?} is reserved in Rust; choose another (e.g. `{name}-webhook`)");
    }
    Ok(())
}

/// Nothing is overwritten: an existing target must be an empty directory.
fn refuse_if_taken(target: &Path) -> Result<()> {
    match std::fs::metadata(target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => bail!("cannot check {}: {e}", target.display()),
        Ok(m) if !m.is_dir() => bail!(
            "{} exists and is not a directory; choose another name or --dir",
            target.display()
        ),
        Ok(_) => {
            let mut entries = std::fs::read_dir(target)
                .with_context(|| format!("cannot read {}", target.display()))?;
            if entries.next().is_some() {
                bail!(
                    "{} exists and is not empty; choose another name or --dir, or remove it",
                    target.display()
                );
            }
            Ok(())
        }
    }
}

/// Creates `path` (and its parents), failing if it exists.
fn write_new(path: &Path, text: &str, executable: bool) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if executable { 0o755 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = executable;
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
