//! `seed-config` end to end on temporary directories: the os-apply-config command line
//! (apply, --key, --print-templates, --validate, exit codes) and refresh.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

fn seed_config(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seed-config"))
        .args(args)
        // Keep the host's metadata and templates out of the test.
        .env_remove("OS_CONFIG_FILES")
        .env_remove("OS_CONFIG_APPLIER_TEMPLATES")
        .env_remove("OS_REFRESH_CONFIG_BASE_DIR")
        .env_remove("OS_CONFIG_FILES_PATH")
        .output()
        .expect("running seed-config")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn put(root: &Path, rel: &str, body: &str, mode: u32) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, body).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

const CONFIG: &str = r#"{"x": "foo", "y": false, "z": null, "btrue": true, "bfalse": false,
  "database": {"url": "sqlite:///blah"}, "l": [1, 2]}"#;

#[test]
fn apply_renders_the_tripleo_example_and_merges_metadata_in_order() {
    let d = tempfile::tempdir().unwrap();
    let (t, out) = (d.path().join("templates"), d.path().join("root"));
    put(
        &t,
        "etc/mysql/conf.d/client.cnf",
        "[client]\nuser = root\n{{#mysql.root-password}}\npassword = {{.}}\n{{/mysql.root-password}}\n",
        0o644,
    );
    put(&t, "etc/mysql/conf.d/client.cnf.oac", "mode: 0600\n", 0o644);
    put(&t, "etc/hosts.d/me", "{{host.name}} {{host.ip}}\n", 0o644);
    put(
        &t,
        "etc/from-script",
        "#!/bin/sh\necho generated; cat >/dev/null\n",
        0o755,
    );
    let m1 = d.path().join("1.json");
    let m2 = d.path().join("2.json");
    fs::write(
        &m1,
        r#"{"mysql": {"root-password": "wrong"}, "host": {"name": "n1", "ip": "192.0.2.1"}}"#,
    )
    .unwrap();
    fs::write(
        &m2,
        r#"{"mysql": {"root-password": "Heifs23jk3"}, "host": {"ip": "192.0.2.9"}}"#,
    )
    .unwrap();

    let args = |extra: &[&str]| {
        let mut v = vec![
            "apply",
            "-t",
            t.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ];
        v.extend_from_slice(extra);
        v.push("-m");
        v.push(m1.to_str().unwrap());
        v.push(m2.to_str().unwrap());
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        seed_config(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // --validate renders but writes nothing.
    let o = run(&["--validate"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.exists());

    let o = run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let client = out.join("etc/mysql/conf.d/client.cnf");
    assert_eq!(
        fs::read_to_string(&client).unwrap(),
        "[client]\nuser = root\npassword = Heifs23jk3\n"
    );
    assert_eq!(fs::metadata(&client).unwrap().mode() & 0o777, 0o600);
    assert_eq!(
        fs::read_to_string(out.join("etc/hosts.d/me")).unwrap(),
        "n1 192.0.2.9\n"
    );
    assert_eq!(
        fs::read_to_string(out.join("etc/from-script")).unwrap(),
        "generated\n"
    );
    assert!(!out.join("etc/mysql/conf.d/client.cnf.oac").exists());

    // Second run: nothing changes, so nothing is rewritten.
    let ino = fs::metadata(&client).unwrap().ino();
    let o = run(&[]);
    assert!(o.status.success());
    assert_eq!(fs::metadata(&client).unwrap().ino(), ino);
}

#[test]
fn bad_template_fails_with_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("templates");
    put(&t, "etc/broken.conf", "a = 1\nb = {{#x}}2\n", 0o644);
    let o = seed_config(&[
        "apply",
        "-t",
        t.to_str().unwrap(),
        "-o",
        d.path().join("out").to_str().unwrap(),
        "-m",
        "/nonexistent.json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{}:2:", t.join("etc/broken.conf").display())),
        "{err}"
    );
    assert!(err.contains("never closed"), "{err}");
    assert!(!d.path().join("out").exists());
}

#[test]
fn key_lookups_match_os_apply_config() {
    let d = tempfile::tempdir().unwrap();
    let md = d.path().join("md.json");
    fs::write(&md, CONFIG).unwrap();
    let md = md.to_str().unwrap();
    let key = |extra: &[&str]| {
        let mut a = vec!["apply", "--metadata", md, "--key"];
        a.extend_from_slice(extra);
        seed_config(&a)
    };
    // (args after --key, exit code, stdout, stderr must contain)
    let cases: &[(&[&str], i32, &str, &str)] = &[
        (
            &["database.url", "--type", "raw"],
            0,
            "sqlite:///blah\n",
            "",
        ),
        (
            &["database", "--type", "raw"],
            0,
            "{\"url\": \"sqlite:///blah\"}\n",
            "",
        ),
        (&["l", "--type", "raw"], 0, "[1, 2]\n", ""),
        (&["y", "--type", "raw"], 0, "false\n", ""),
        (&["z", "--type", "raw", "--key-default", ""], 0, "\n", ""),
        (&["does.not.exist"], 1, "", "does not exist"),
        (&["does.not.exist", "--key-default", ""], 0, "\n", ""),
        (&["x", "--type", "int"], 1, "", "cannot interpret value"),
        (&["l.0", "--type", "int"], 0, "1\n", ""),
        (&["l.2", "--type", "int"], 1, "", "does not exist"),
        (&["l.2", "--type", "int", "--key-default", ""], 0, "\n", ""),
        (&["x", "--type", "nosuchtype"], 1, "", "unknown type"),
    ];
    for (args, code, out, err) in cases {
        let o = key(args);
        assert_eq!(o.status.code(), Some(*code), "{args:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), *out, "{args:?}");
        assert!(stderr(&o).contains(err), "{args:?}: {}", stderr(&o));
        if *code == 0 {
            assert_eq!(stderr(&o), "", "{args:?} logged something");
        }
    }
    for (k, code) in [("btrue", 0), ("bfalse", 1), ("x", 255)] {
        let o = seed_config(&["apply", "--metadata", md, "--boolean-key", k]);
        assert_eq!(o.status.code(), Some(code), "{k}");
    }
    let o = seed_config(&[
        "apply",
        "--metadata",
        md,
        "--boolean-key",
        "btrue",
        "--key",
        "x",
    ]);
    assert_eq!(
        (o.status.code(), stdout(&o)),
        (Some(0), "foo\n".to_string())
    );
    assert!(stderr(&o).contains("--boolean-key ignored"));

    // --os-config-files names the list of metadata files.
    let list = d.path().join("os_config_files.json");
    fs::write(&list, format!("[\"{md}\"]")).unwrap();
    let o = seed_config(&[
        "apply",
        "--key",
        "database.url",
        "--type",
        "raw",
        "--os-config-files",
        list.to_str().unwrap(),
    ]);
    assert_eq!(stdout(&o), "sqlite:///blah\n", "{}", stderr(&o));

    let o = seed_config(&["apply", "--print-templates", "-t", "/some/where"]);
    assert_eq!(
        (o.status.code(), stdout(&o)),
        (Some(0), "/some/where\n".to_string())
    );
}

#[test]
fn refresh_runs_phases_and_reports_a_failing_script() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("orc");
    let log = d.path().join("log");
    let t = d.path().join("templates");
    let out = d.path().join("root");
    put(&t, "etc/motd", "hello {{x}}\n", 0o644);
    let md = d.path().join("md.json");
    fs::write(&md, CONFIG).unwrap();
    let rec = |name: &str| {
        format!(
            "#!/bin/sh\necho {name} $(cat {}/etc/motd 2>/dev/null) >> {}\n",
            out.display(),
            log.display()
        )
    };
    put(&base, "pre-configure.d/10-pre", &rec("pre"), 0o755);
    put(&base, "configure.d/10-conf", &rec("conf"), 0o755);
    put(&base, "configure.d/README.md", "not a script", 0o755);
    put(&base, "post-configure.d/10-post", &rec("post"), 0o755);
    put(&base, "migration.d/10-mig", &rec("mig"), 0o755);
    let lock = d.path().join("lock");
    let args = [
        "refresh",
        "--base-dir",
        base.to_str().unwrap(),
        "--lockfile",
        lock.to_str().unwrap(),
        "-t",
        t.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-m",
        md.to_str().unwrap(),
    ];
    let o = seed_config(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "pre\nconf hello foo\npost hello foo\nmig hello foo\n"
    );

    fs::remove_file(&log).unwrap();
    put(
        &base,
        "post-configure.d/05-fail",
        "#!/bin/sh\necho 'service would not start' >&2\nexit 3\n",
        0o755,
    );
    let o = seed_config(&args);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("05-fail") && err.contains("service would not start") && err.contains("3"),
        "{err}"
    );
    // The motd is still there from the first run; migration.d never ran.
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "pre hello foo\nconf hello foo\n"
    );

    let o = seed_config(&["refresh", "--print-phases"]);
    assert_eq!(
        stdout(&o),
        "pre-configure\tconfigure\tpost-configure\tmigration\n"
    );
}
