use super::*;
use crate::config::runparts::RunPartsError;
use serde_json::json;

#[test]
fn deployments_of_os_apply_config_become_their_own_sources() {
    let doc = json!({
        "seed": {"node": "node1"},
        "deployments": [
            {"name": "demo/0", "group": "os-apply-config", "config": {"demo": {"greeting": "hi"}}},
            {"name": "script", "group": "script", "config": "echo no"},
            {"name": "ungrouped", "config": {"demo": {"extra": 1}}},
            {"name": "not-a-map", "group": "os-apply-config", "config": "text"},
            {"group": "os-apply-config", "config": {"nameless": true}}
        ]
    });
    let s = sources(&doc);
    let names: Vec<&str> = s.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["seed", "deployment-demo_0", "deployment-ungrouped"]);
    let d = tempfile::tempdir().unwrap();
    let refs: Vec<(&str, Value)> = s.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    store(d.path(), &refs).unwrap();
    let merged = collect(d.path()).unwrap();
    assert_eq!(merged["demo"]["greeting"], json!("hi"));
    assert_eq!(merged["demo"]["extra"], json!(1));
    assert_eq!(merged["seed"]["node"], json!("node1"));
    let c = Collector::new(identity("http://127.0.0.1:9"), d.path());
    assert_eq!(c.metadata_files().len(), 3);
}

#[test]
fn store_then_collect_merges_in_order() {
    let d = tempfile::tempdir().unwrap();
    let list = store(
        d.path(),
        &[
            (
                "ec2",
                json!({"local-ipv4": "192.0.2.99", "a": {"x": 1, "y": 2}}),
            ),
            (
                "seed",
                json!({"local-ipv4": "198.51.100.50", "a": {"x": 3}}),
            ),
        ],
    )
    .unwrap();
    assert_eq!(list, d.path().join(OS_CONFIG_FILES));
    assert_eq!(
        collect(d.path()).unwrap(),
        json!({"local-ipv4": "198.51.100.50", "a": {"x": 3, "y": 2}})
    );
    assert_eq!(collect(&d.path().join("empty")).unwrap(), json!({}));
}

/// A seed stand-in on 127.0.0.1: answers `answers` connections in order (one request each,
/// `Connection: close`) and records each request's line, authorization and body.
struct FakeSeed {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
}

fn fake_seed(answers: Vec<(u16, String)>) -> FakeSeed {
    use std::io::{BufRead, BufReader, Read};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let rec = seen.clone();
    std::thread::spawn(move || {
        for (status, body) in answers {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let (mut auth, mut len) = (String::new(), 0usize);
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap();
                match k.to_ascii_lowercase().as_str() {
                    "authorization" => auth = v.trim().to_string(),
                    "content-length" => len = v.trim().parse().unwrap(),
                    _ => {}
                }
            }
            let mut b = vec![0; len];
            r.read_exact(&mut b).unwrap();
            rec.lock().unwrap().push((
                line.trim_end().to_string(),
                auth,
                String::from_utf8(b).unwrap(),
            ));
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(reply.as_bytes()).unwrap();
        }
    });
    FakeSeed { url, seen }
}

fn identity(url: &str) -> Identity {
    Identity {
        node: "node1".into(),
        seed_url: format!("{url}/"),
        credential: "cred-1".into(),
        image: "tiny@sha256:00".into(),
        seed_ca: None,
    }
}

/// A refresh stand-in counting its runs and checking it is handed the cached document.
fn counting(
    runs: &std::cell::Cell<u32>,
) -> impl FnMut(&[PathBuf]) -> Result<Vec<Step>, RefreshError> + '_ {
    move |files: &[PathBuf]| {
        runs.set(runs.get() + 1);
        assert!(files.iter().all(|f| f.exists()), "{files:?}");
        Ok(vec![])
    }
}

/// A node up before anything is published for it (counter 0) renders nothing: that is
/// not an empty configuration. The first publish is then applied and signalled.
#[test]
fn nothing_published_is_not_applied() {
    let first = json!({"counter": 0, "data": {"seed": {"node": "node1"}}});
    let doc = json!({"counter": 1, "data": {"deployments": [{"name": "d1"}]}});
    let seed = fake_seed(vec![
        (200, first.to_string()),
        (200, doc.to_string()),
        (200, "{}".into()),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let c = Collector::new(identity(&seed.url), cache.path()).with_retries(0, Duration::ZERO);
    let runs = std::cell::Cell::new(0);
    let p = c.pass(0, false, &mut counting(&runs)).unwrap();
    assert_eq!((p.counter, p.refreshed), (0, false));
    assert!(p.signals.is_empty());
    assert_eq!(runs.get(), 0);
    let p = c.pass(30, false, &mut counting(&runs)).unwrap();
    assert_eq!((p.counter, p.refreshed, p.signals.len()), (1, true, 1));
    assert_eq!(runs.get(), 1);
    let seen = seed.seen.lock().unwrap();
    assert_eq!(seen[1].0, "GET /v1/node/metadata?since=0&wait=30 HTTP/1.1");
}

#[test]
fn refreshes_on_a_new_counter_only_and_signals() {
    let doc = json!({"counter": 4, "data": {"pw": "s3", "deployments": [{"name": "d1"}, {"name": "d2"}]}});
    let seed = fake_seed(vec![
        (200, doc.to_string()),
        (200, "{}".into()),
        (200, "{}".into()),
        (304, String::new()),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let c = Collector::new(identity(&seed.url), cache.path()).with_retries(0, Duration::ZERO);
    let runs = std::cell::Cell::new(0);
    let p = c.pass(0, false, &mut counting(&runs)).unwrap();
    assert_eq!(
        (p.counter, p.origin, p.refreshed, p.failed),
        (4, Origin::Seed, true, false)
    );
    assert_eq!(runs.get(), 1);
    assert_eq!(
        c.state(),
        CacheState {
            counter: 4,
            applied: Some(4)
        }
    );
    assert_eq!(collect(cache.path()).unwrap(), doc["data"]);
    // Counter unchanged (the seed answers 304 to since=4): no refresh, no signal.
    let p = c.pass(30, false, &mut counting(&runs)).unwrap();
    assert!(!p.refreshed);
    assert!(p.signals.is_empty());
    assert_eq!(runs.get(), 1);

    let seen = seed.seen.lock().unwrap();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[0].0, "GET /v1/node/metadata HTTP/1.1");
    assert_eq!(seen[0].1, "Bearer cred-1");
    assert_eq!(seen[3].0, "GET /v1/node/metadata?since=4&wait=30 HTTP/1.1");
    for (i, name) in [(1, "d1"), (2, "d2")] {
        assert_eq!(seen[i].0, "POST /v1/node/signal HTTP/1.1");
        let sig: Signal = serde_json::from_str(&seen[i].2).unwrap();
        assert_eq!(sig.deployment, name);
        assert_eq!(sig.status, SignalStatus::Complete);
        assert_eq!(sig.counter, 4);
        assert_eq!(sig.outputs["deploy_status_code"], 0);
    }
}

#[test]
fn falls_back_to_the_cache_when_the_seed_is_gone() {
    // A port nothing listens on (bound, then closed): connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone = format!("http://127.0.0.1:{port}");
    let cache = tempfile::tempdir().unwrap();
    let c = Collector::new(identity(&gone), cache.path()).with_retries(2, Duration::from_millis(1));
    // Nothing cached: a clear error naming both facts.
    let e = c.collect(0).unwrap_err();
    assert!(
        matches!(e, CollectError::NoMetadata(ref inner) if matches!(**inner, CollectError::Transport { .. })),
        "{e:?}"
    );

    // A cached document from an earlier boot, not yet applied: used and applied.
    store(cache.path(), &[(SEED_SOURCE, json!({"pw": "old"}))]).unwrap();
    c.write_state(CacheState {
        counter: 2,
        applied: None,
    })
    .unwrap();
    let got = c.collect(0).unwrap();
    assert_eq!(
        got,
        Collected {
            counter: 2,
            data: json!({"pw": "old"}),
            origin: Origin::Cache
        }
    );
    let runs = std::cell::Cell::new(0);
    let p = c.pass(0, false, &mut counting(&runs)).unwrap();
    assert!(p.refreshed && p.origin == Origin::Cache);
    assert_eq!(c.state().applied, Some(2));
    // Applied already: the next pass leaves it alone.
    c.pass(0, false, &mut counting(&runs)).unwrap();
    assert_eq!(runs.get(), 1);
    // --force re-applies.
    assert!(c.pass(0, true, &mut counting(&runs)).unwrap().refreshed);
}

#[test]
fn a_refusal_is_not_retried() {
    let seed = fake_seed(vec![(
        401,
        r#"{"error": "unknown node credential"}"#.into(),
    )]);
    let cache = tempfile::tempdir().unwrap();
    let c =
        Collector::new(identity(&seed.url), cache.path()).with_retries(3, Duration::from_millis(1));
    let e = c.collect(0).unwrap_err();
    let CollectError::NoMetadata(inner) = e else {
        panic!("{e:?}")
    };
    assert!(
        matches!(*inner, CollectError::Status { status: 401, .. }),
        "{inner:?}"
    );
    assert!(inner.to_string().contains("unknown node credential"));
    assert_eq!(seed.seen.lock().unwrap().len(), 1);
}

#[test]
fn failed_refresh_signals_the_scripts_output() {
    use std::os::unix::process::ExitStatusExt;
    let data = json!({"deployments": [{"name": "db"}, {"no-name": 1}]});
    let err: Result<Vec<Step>, RefreshError> = Err(RefreshError::Phase {
        phase: "configure".into(),
        source: RunPartsError::Failed {
            script: "/x/configure.d/20-db".into(),
            status: std::process::ExitStatus::from_raw(3 << 8),
            output: "db would not start\n".into(),
        },
    });
    let sigs = signals_for(&data, 7, &err);
    assert_eq!(sigs.len(), 1);
    let s = &sigs[0];
    assert_eq!(
        (s.deployment.as_str(), s.status, s.counter),
        ("db", SignalStatus::Failed, 7)
    );
    let reason = s.reason.as_deref().unwrap();
    assert!(
        reason.contains("20-db") && reason.contains("db would not start"),
        "{reason}"
    );
    assert_eq!(s.outputs["deploy_status_code"], 3);
    assert_eq!(s.outputs["deploy_stderr"], "db would not start\n");
    assert!(signals_for(&json!({"a": 1}), 1, &Ok(vec![])).is_empty());
}
