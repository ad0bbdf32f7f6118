//! The container recipe (`Containerfile`) and the systemd unit (`dist/systemd/corral.service`),
//! parsed and checked against the binary, since no container runtime or systemd runs here:
//! stages, user, paths, ports, health check, stop signal, sandboxing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;

fn repo(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Whether `corral <args> --help` is accepted: the arguments name real commands and options.
fn accepted(args: &[String]) -> bool {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap()
        .status
        .success()
}

/// The Containerfile's instructions, continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && pending.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => pending.push_str(part),
            None => {
                pending.push_str(line);
                let (op, args) = pending.split_once(' ').unwrap_or((&pending, ""));
                out.push((op.to_ascii_uppercase(), args.trim().to_owned()));
                pending.clear();
            }
        }
    }
    out
}

/// A JSON exec form (`["a", "b"]`).
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not an exec form {args}: {e}"))
}

/// `KEY=value` pairs of an ENV instruction (several per line allowed).
fn env_pairs(args: &str) -> Vec<(String, String)> {
    args.split_whitespace()
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn the_containerfile_builds_in_one_stage_and_runs_unprivileged_in_another() {
    let all = instructions(&repo("Containerfile"));
    let stages: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, (op, _))| op == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    assert!(all[stages[0]].1.ends_with(" AS build"), "{:?}", all[stages[0]]);
    let (build, runtime) = (&all[stages[0]..stages[1]], &all[stages[1]..]);
    let built = build
        .iter()
        .find(|(op, args)| op == "RUN" && args.contains("cargo build"))
        .expect("the build stage runs cargo build");
    assert!(
        built.1.contains("--release") && built.1.contains("--locked") && built.1.contains("-p corral"),
        "{built:?}"
    );

    let get = |op: &'static str| runtime.iter().filter(move |(o, _)| o == op).map(|(_, a)| a.as_str());
    // The binary comes from the build stage, and is what runs.
    let copied = get("COPY")
        .find(|a| a.starts_with("--from=build"))
        .expect("a COPY --from=build");
    let binary = copied.split_whitespace().last().unwrap().to_owned();
    assert!(built.1.contains(&binary), "the build stage installs {binary}");
    let entry = exec_form(get("ENTRYPOINT").next().unwrap());
    assert_eq!(entry, std::slice::from_ref(&binary));
    let cmd = exec_form(get("CMD").next().unwrap());
    assert!(accepted(&cmd), "CMD {cmd:?} is a corral command");
    assert_eq!(cmd[0], "serve");

    // An unprivileged user.
    let user = get("USER").next_back().expect("a USER");
    assert!(!["root", "0", "root:root", "0:0"].contains(&user), "runs as {user}");
    let created = get("RUN").any(|a| a.contains("useradd") && a.contains(user.split(':').next().unwrap()));
    assert!(created, "the user {user} is created");

    // Data on a volume, where DATA_DIR points; listening on every address at the exposed port.
    let env: BTreeMap<String, String> = get("ENV").flat_map(env_pairs).collect();
    let volumes = exec_form(get("VOLUME").next().unwrap());
    assert_eq!(volumes, [env["DATA_DIR"].clone()]);
    assert_eq!(get("WORKDIR").next_back().unwrap(), env["DATA_DIR"]);
    assert!(
        get("RUN").any(
            |a| a.contains(&format!("-o {u} -g {u}", u = user.split(':').next().unwrap()))
                && a.contains(&env["DATA_DIR"])
        ),
        "the data directory belongs to the user"
    );
    assert_eq!(env["HOST"], "0.0.0.0");
    // The allocator takes no transparent huge pages, whatever the host's THP mode.
    assert_eq!(env["MIMALLOC_ALLOW_THP"], "0");
    let port: u16 = env["PORT"].parse().unwrap();
    assert_eq!(get("EXPOSE").next().unwrap(), port.to_string());

    // The health check runs the binary's own liveness probe.
    let check = get("HEALTHCHECK").next().expect("a HEALTHCHECK");
    let (options, command) = check.split_once("CMD ").unwrap();
    assert!(
        options.contains("--interval=") && options.contains("--timeout="),
        "{options}"
    );
    let command = exec_form(command);
    assert_eq!(command[0], binary);
    assert!(accepted(&command[1..]), "{command:?} is a corral command");
    assert_eq!(get("STOPSIGNAL").next(), Some("SIGTERM"), "Corral drains on SIGTERM");

    // The context leaves build output and data out.
    let ignore = repo(".containerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target/"), "{ignore}");
}

/// The unit's `[section]` → key → values (a key may repeat).
fn unit(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line}"));
        assert!(!current.is_empty(), "{line} is outside a section");
        sections
            .entry(current.clone())
            .or_default()
            .entry(key.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    sections
}

#[test]
fn the_systemd_unit_runs_the_binary_sandboxed_and_lets_it_drain() {
    let sections = unit(&repo("dist/systemd/corral.service"));
    assert_eq!(sections.keys().collect::<Vec<_>>(), ["Install", "Service", "Unit"]);
    let service = &sections["Service"];
    let one = |key: &str| -> &str {
        let values = service.get(key).unwrap_or_else(|| panic!("no {key}"));
        values.last().unwrap()
    };
    let exec: Vec<String> = one("ExecStart").split_whitespace().map(str::to_owned).collect();
    assert_eq!(exec[0], "/usr/local/bin/corral");
    assert!(accepted(&exec[1..]), "{exec:?} is a corral command");

    // Its own unprivileged user; data in the state directory DATA_DIR names.
    assert!(one("DynamicUser") == "yes" || !["root", "0"].contains(&one("User")));
    let env: BTreeMap<&str, &str> = service["Environment"]
        .iter()
        .map(|e| e.split_once('=').unwrap())
        .collect();
    assert_eq!(env["DATA_DIR"], format!("/var/lib/{}", one("StateDirectory")));
    assert_eq!(one("WorkingDirectory"), env["DATA_DIR"]);
    let _: u16 = env["PORT"].parse().unwrap();
    assert_eq!(env["MIMALLOC_ALLOW_THP"], "0");

    // Stopped with SIGTERM, and waited for longer than the default drain.
    assert_eq!(one("KillSignal"), "SIGTERM");
    let drain = corral_config::Settings::default().server;
    let stop: f64 = one("TimeoutStopSec").parse().unwrap();
    assert!(
        stop > drain.shutdown_delay + drain.shutdown_grace,
        "TimeoutStopSec {stop} cuts the drain short"
    );
    let files: u64 = one("LimitNOFILE").parse().unwrap();
    assert!(files >= 4096, "corral doctor asks for at least 4096 open files");

    // Sandboxing.
    for (key, want) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(one(key), want, "{key}");
    }
    assert_eq!(one("RestrictAddressFamilies"), "AF_INET AF_INET6 AF_UNIX");
    assert!(service["SystemCallFilter"].contains(&"@system-service".to_owned()));
    assert_eq!(sections["Install"]["WantedBy"], ["multi-user.target"]);
}

#[test]
fn systemd_itself_accepts_the_unit_where_it_is_installed() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipping: systemd-analyze is not installed (the unit is parsed by the test above)");
        return;
    };
    assert!(probe.status.success());
    // The unit names the installed path; point it at the binary under test.
    let text = repo("dist/systemd/corral.service").replace("/usr/local/bin/corral", env!("CARGO_BIN_EXE_corral"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corral.service");
    std::fs::write(&path, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}

#[test]
fn the_binary_loads_only_glibc_and_openssl_which_the_image_installs() {
    // libpq is built in (pq-sys `bundled`): Debian's would load fifteen more libraries
    // (Kerberos, LDAP, GnuTLS, ...), about 3 MB of an idle gateway's memory.
    let out = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_corral"))
        .output()
        .expect("ldd runs");
    assert!(out.status.success(), "ldd: {}", String::from_utf8_lossy(&out.stderr));
    let glibc = [
        "linux-vdso.so",
        "libc.so",
        "libm.so",
        "libgcc_s.so",
        "ld-linux",
        "libpthread.so",
        "libdl.so",
        "librt.so",
    ];
    let openssl = ["libssl.so", "libcrypto.so"];
    let loaded: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|name| name.rsplit('/').next().unwrap_or(name).to_owned())
        .collect();
    let others: Vec<&String> = loaded
        .iter()
        .filter(|name| !glibc.iter().chain(&openssl).any(|p| name.starts_with(p)))
        .collect();
    assert!(
        others.is_empty(),
        "the binary loads {others:?} beyond glibc and OpenSSL"
    );
    let all = instructions(&repo("Containerfile"));
    let runtime = &all[all.iter().rposition(|(op, _)| op == "FROM").unwrap()..];
    assert!(
        runtime.iter().any(|(op, args)| op == "RUN" && args.contains("libssl3")),
        "the runtime image installs OpenSSL"
    );
}
