//! The deploy API against an in-memory store, a real image store and a fake BMC whose power
//! history the tests read.

use super::*;
use crate::daemon::test_support::{attach_fake_bmc, fake_node, settings};
use crate::lifecycle::State;
use crate::lifecycle::Timeouts;
use crate::power::{self, FakeBmc, PowerState};
use crate::store::memory::MemStore;
use crate::store::nodes;
use ::api::agent::Command;
use ::images::ImageStore;
use netboot::BootPolicy;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

const MAC: &str = "52:54:00:00:00:01";
const TOKEN: &str = "s3cret";

struct Env {
    d: Arc<Daemon>,
    api: Api,
    bmc: Arc<FakeBmc>,
    images: tempfile::TempDir,
}

/// Write a `tiny` image (stream + manifest) into `dir`; returns the manifest path.
fn image(dir: &Path, body: &[u8]) -> std::path::PathBuf {
    ::images::store::write_placeholder(dir, "tiny", body).unwrap()
}

fn setup(timeouts: Timeouts) -> Env {
    let store = Arc::new(MemStore::new());
    let mut node = fake_node("n1", MAC);
    node.lifecycle.state = State::Available;
    nodes::create(&*store, &[node]).unwrap();
    let d = Daemon::new(store, settings(timeouts, true)).unwrap();
    // The node's power goes through a fake BMC the test keeps a handle on.
    let bmc = attach_fake_bmc(&d, "n1");
    let images = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let store = ImageStore::open(images.path().join("images")).unwrap();
    store.import(&image(src.path(), b"the tiny image")).unwrap();
    assert!(d.set_images(store, "images"));
    let api = Api::new(d.clone(), TOKEN);
    Env {
        d,
        api,
        bmc,
        images,
    }
}

use crate::daemon::test_support::request as req;

fn json(r: &ApiResponse) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

impl Env {
    fn state(&self) -> State {
        nodes::get(self.d.store(), "n1")
            .unwrap()
            .unwrap()
            .0
            .lifecycle
            .state
    }

    /// Request the deploy (202) and wait until the agent's deploy command is queued.
    async fn deploy_queued(&self) {
        assert_eq!(self.deploy().await.status, 202);
        self.wait("deploy command queued", |e| e.deploy_command().is_some())
            .await;
    }

    async fn wait(&self, what: &str, mut f: impl FnMut(&Env) -> bool) {
        for _ in 0..300 {
            if f(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}: still not true; node {:?}", self.state());
    }

    async fn deploy(&self) -> ApiResponse {
        self.api
            .respond(&req(
                Method::POST,
                "/v1/nodes/n1/deploy",
                Some(TOKEN),
                r#"{"image": "tiny", "root_hint": "size>=4"}"#,
            ))
            .await
    }

    async fn deploy_image(&self, image: &str) -> ApiResponse {
        let body = serde_json::json!({ "image": image }).to_string();
        self.api
            .respond(&req(
                Method::POST,
                "/v1/nodes/n1/deploy",
                Some(TOKEN),
                &body,
            ))
            .await
    }

    /// The node's current agent token (what its ramdisk's `seed.token=` says), if any.
    fn agent_token(&self) -> Option<String> {
        let n = nodes::get(self.d.store(), "n1").unwrap().unwrap().0;
        self.d.agent_tokens.current("n1", &n.lifecycle)
    }

    /// A progress report with the node's current agent token.
    async fn progress(&self, op: u64, phase: &str, bytes: u64, error: Option<&str>) -> ApiResponse {
        let tok = self.agent_token();
        self.progress_with(tok.as_deref(), op, phase, bytes, error)
            .await
    }

    async fn progress_with(
        &self,
        tok: Option<&str>,
        op: u64,
        phase: &str,
        bytes: u64,
        error: Option<&str>,
    ) -> ApiResponse {
        let mut p = serde_json::json!({
            "boot_mac": MAC, "op": op, "phase": phase, "bytes": bytes, "total": 14
        });
        if let Some(e) = error {
            p["error"] = e.into();
        }
        self.api
            .respond(&req(
                Method::POST,
                "/v1/agent/progress",
                tok,
                &p.to_string(),
            ))
            .await
    }

    fn deploy_command(&self) -> Option<::api::agent::DeployCommand> {
        match self.d.pending_command("n1") {
            Command::Deploy(c) => Some(*c),
            _ => None,
        }
    }

    async fn booted(&self, token: Option<&str>) -> ApiResponse {
        self.api
            .respond(&req(Method::POST, "/v1/node/booted", token, ""))
            .await
    }
}

#[tokio::test]
async fn deploy_write_reboot_booted_active() {
    let e = setup(Timeouts::default());
    let mac = netboot::MacAddr([0x52, 0x54, 0, 0, 0, 1]);
    let r = e.deploy().await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(json(&r)["state"], "deploying");
    e.wait("deploy command queued", |e| e.deploy_command().is_some())
        .await;
    let cmd = e.deploy_command().unwrap();
    let op = cmd.op;
    assert_eq!(cmd.node, "n1");
    assert_eq!(cmd.manifest.name, "tiny");
    assert_eq!(cmd.root_hint.as_deref(), Some("size>=4"));
    assert_eq!(cmd.seed_url, "http://10.0.0.1:8080");
    let digest = hex::encode(Sha256::digest(b"the tiny image"));
    assert_eq!(
        cmd.stream_url,
        format!("http://10.0.0.1:8080/images/{digest}/rootfs.tar.zst")
    );
    // The URL's path is a real file under the served directory.
    let served = e
        .images
        .path()
        .join(cmd.stream_url.split("8080/").nth(1).unwrap());
    assert_eq!(std::fs::read(served).unwrap(), b"the tiny image");
    assert_eq!(cmd.credential.expose().len(), 64);
    // Then the node was set to PXE and powered on: it boots the ramdisk.
    e.wait("powered on from PXE", |e| e.bmc.boots() == 1).await;
    assert_eq!(e.bmc.last_boot_device(), Some(power::BootDevice::Pxe));
    // Its command line carries the boot's agent token, which the agent sends from now on.
    let tok = match e.d.boot_action(mac) {
        Some(netboot::BootAction::Kernel { cmdline, .. }) => {
            ::api::agent::KernelArgs::parse(&cmdline).token.unwrap()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(Some(&tok), e.agent_token().as_ref());
    // The ramdisk's agent reports its facts first: acknowledged, nothing changes.
    let facts = serde_json::json!({
        "boot_mac": MAC,
        "facts": {
            "cpus": 1, "cpu_model": "QEMU", "memory_mib": 512,
            "disks": [{"name": "vda", "size_bytes": 4294967296u64, "model": "", "serial": "", "rotational": false}],
            "nics": [{"name": "eth0", "mac": MAC, "link": true, "driver": "virtio_net"}],
            "dmi": {"vendor": "QEMU", "product": "Standard PC", "serial": "", "uuid": "u"},
            "boot_mode": "bios"
        }
    });
    let r = e
        .api
        .respond(&req(
            Method::POST,
            "/v1/agent/facts",
            Some(&tok),
            &facts.to_string(),
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["node"], "n1");
    assert_eq!(e.state(), State::Deploying);
    assert!(e.deploy_command().is_some(), "the work is still there");
    // Whoever knows the MAC but not the token gets no work and no credential: 401.
    let hb = format!("{{\"boot_mac\":\"{MAC}\"}}");
    for bad in [
        None,
        Some(""),
        Some("forged"),
        Some(TOKEN),
        Some(&tok[..63]),
    ] {
        let r = e
            .api
            .respond(&req(Method::POST, "/v1/agent/heartbeat", bad, &hb))
            .await;
        assert_eq!(r.status, 401, "{bad:?}: {}", r.body);
        assert!(!r.body.contains(cmd.credential.expose()), "{}", r.body);
        assert!(!r.body.contains("deploy\""), "{}", r.body);
        assert!(json(&r)["error"].is_string(), "{}", r.body);
    }
    // Nor can it report progress (mark the image written): nothing recorded, nothing moves.
    let r = e.progress_with(None, op, "done", 14, None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = e.progress_with(Some("forged"), op, "done", 14, None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(e.d.last_progress("n1"), None);
    assert_eq!(e.state(), State::Deploying);
    assert_eq!(e.bmc.boots(), 1, "no power cycle");
    assert_eq!(e.d.metrics().agent_auth_failures(), 7);
    // The heartbeat with the token hands the agent its work; the credential and the token
    // show nowhere else.
    let r = e
        .api
        .respond(&req(Method::POST, "/v1/agent/heartbeat", Some(&tok), &hb))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains(cmd.credential.expose()));
    for path in ["/v1/nodes/n1", "/v1/nodes"] {
        let show = e
            .api
            .respond(&req(Method::GET, path, Some(TOKEN), ""))
            .await;
        assert_eq!(show.status, 200);
        assert!(
            !show.body.contains(cmd.credential.expose()),
            "{}",
            show.body
        );
        assert!(!show.body.contains(&tok), "{}", show.body);
    }

    // A report of another op is dropped: nothing recorded, nothing moves.
    let r = e.progress(op + 7, "done", 14, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(e.d.last_progress("n1"), None);
    assert_eq!(e.state(), State::Deploying);
    assert!(
        !nodes::get(e.d.store(), "n1")
            .unwrap()
            .unwrap()
            .0
            .lifecycle
            .image_written
    );

    // Writing: recorded and shown.
    let r = e.progress(op, "writing", 7, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("\"deploy\""),
        "still told to deploy: {}",
        r.body
    );
    let v = json(
        &e.api
            .respond(&req(Method::GET, "/v1/nodes/n1", Some(TOKEN), ""))
            .await,
    );
    assert_eq!(v["progress"]["phase"], "writing");
    assert_eq!(v["progress"]["bytes"], 7);

    // Done: boot from disk, power-cycled, still deploying (never active half-way).
    let r = e.progress(op, "done", 14, None).await;
    assert_eq!(r.status, 200);
    e.wait("cycled into the disk", |e| e.bmc.boots() == 2).await;
    assert_eq!(e.bmc.last_boot_device(), Some(power::BootDevice::Disk));
    assert_eq!(e.state(), State::Deploying);
    assert_eq!(e.d.boot_action(mac), Some(netboot::BootAction::LocalDisk));
    assert_eq!(e.d.pending_command("n1"), Command::None);

    // booted: no or a forged credential is 401 and changes nothing.
    assert_eq!(e.booted(None).await.status, 401);
    assert_eq!(e.booted(Some("forged")).await.status, 401);
    assert_eq!(
        e.booted(Some(TOKEN)).await.status,
        401,
        "the API token is no node"
    );
    assert_eq!(e.state(), State::Deploying);
    let r = e.booted(Some(cmd.credential.expose())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json(&r)["state"], "active");
    assert_eq!(e.state(), State::Active);
    // No further power action, and a repeated "booted" is fine.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(e.bmc.boots(), 2);
    assert_eq!(e.booted(Some(cmd.credential.expose())).await.status, 200);

    // Undeploy: torn down and the credential revoked.
    let r = e
        .api
        .respond(&req(Method::POST, "/v1/nodes/n1/undeploy", Some(TOKEN), ""))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(json(&r)["state"], "deleting");
    assert_eq!(e.booted(Some(cmd.credential.expose())).await.status, 401);
    // Powered off → torn down → cleaning: the ramdisk gets the wipe with the cleaning op.
    e.wait("wipe queued, node PXE-booted", |e| {
        matches!(e.d.pending_command("n1"), Command::Wipe(_))
            && e.bmc.power_state() == PowerState::On
    })
    .await;
    assert_eq!(e.state(), State::Cleaning);
    let Command::Wipe(w) = e.d.pending_command("n1") else {
        unreachable!()
    };
    // The cleaning boot has its own token: the deploy's no longer works.
    let clean_tok = e.agent_token().unwrap();
    assert_ne!(clean_tok, tok);
    assert_eq!(
        e.progress_with(Some(&tok), w.op, "done", 14, None)
            .await
            .status,
        401
    );
    assert_eq!(e.state(), State::Cleaning);
    // The deploy's late report is stale; the wipe's "done" makes the node available, off.
    assert_eq!(e.progress(cmd.op, "done", 14, None).await.status, 200);
    assert_eq!(e.state(), State::Cleaning);
    let r = e.progress(w.op, "done", 14, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(json(&r)["command"], "power_off");
    assert_eq!(e.state(), State::Available);
    // Out of the ramdisk states: no token at all, the cleaning one is dead.
    assert_eq!(e.agent_token(), None);
    assert_eq!(
        e.api
            .respond(&req(
                Method::POST,
                "/v1/agent/heartbeat",
                Some(&clean_tok),
                &hb
            ))
            .await
            .status,
        401
    );
    e.wait("powered off", |e| e.bmc.power_state() == PowerState::Off)
        .await;
}

#[tokio::test]
async fn corrupted_image_fails_before_any_power_action_and_a_retry_works() {
    let e = setup(Timeouts::default());
    let img = e.d.images().unwrap().get("tiny").unwrap();
    std::thread::sleep(Duration::from_millis(20)); // a new mtime: verify re-hashes
    std::fs::write(&img.stream, b"the evil image").unwrap();
    assert_eq!(e.deploy().await.status, 202);
    e.wait("deploy failed", |e| e.state().is_failed()).await;
    let reason = e.state().reason().unwrap().to_string();
    assert!(reason.contains("sha256"), "{reason}");
    assert_eq!(e.bmc.commands(), 0, "the BMC was never asked anything");
    assert_eq!(e.bmc.boots(), 0);
    assert_eq!(e.deploy_command(), None);
    let v = json(
        &e.api
            .respond(&req(Method::GET, "/v1/nodes/n1", Some(TOKEN), ""))
            .await,
    );
    assert_eq!(v["state"], "deploy failed");
    assert!(v["last_error"].as_str().unwrap().contains("sha256"), "{v}");

    // A missing image is refused at the request: the failed node keeps its reason.
    std::fs::write(&img.stream, b"the tiny image").unwrap();
    assert_eq!(e.deploy_image("nope").await.status, 404);
    assert!(e.state().reason().unwrap().contains("sha256"));

    // The image repaired: the retry deploys.
    e.deploy_queued().await;
    e.wait("powered on", |e| e.bmc.boots() == 1).await;
    let n = nodes::get(e.d.store(), "n1").unwrap().unwrap().0;
    assert_eq!(n.lifecycle.attempts, 2);
}

/// `seed node deploy NODE --image nope`: an image the store does not have is the operator's
/// typo, not a node fault. Refused at the request (404, naming the image); the node is left as
/// it was: same state, no attempt counted, no power action, no agent command.
#[tokio::test]
async fn a_missing_image_is_refused_at_the_request_and_the_node_is_untouched() {
    let e = setup(Timeouts::default());
    let before = nodes::get(e.d.store(), "n1").unwrap().unwrap().0;
    let r = e.deploy_image("nope").await;
    assert_eq!(r.status, 404, "{}", r.body);
    let msg = json(&r)["error"].as_str().unwrap().to_string();
    assert!(msg.contains("\"nope\""), "{msg}");
    assert!(msg.contains("image store"), "{msg}");
    // A name that cannot be an image at all is a bad request, also before anything moves.
    assert_eq!(e.deploy_image("../tiny").await.status, 400);
    // Give a wrongly accepted deploy the time to reach the BMC.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = nodes::get(e.d.store(), "n1").unwrap().unwrap().0;
    assert_eq!(after.lifecycle, before.lifecycle);
    assert_eq!(e.state(), State::Available);
    assert_eq!(e.bmc.commands(), 0, "the BMC was never asked anything");
    assert_eq!(e.deploy_command(), None);
}

#[tokio::test]
async fn agent_failure_fails_the_deploy_with_its_reason() {
    let e = setup(Timeouts::default());
    e.deploy_queued().await;
    let op = e.deploy_command().unwrap().op;
    e.wait("powered on", |e| e.bmc.power_state() == PowerState::On)
        .await;
    let r = e
        .progress(
            op,
            "failed",
            3,
            Some("disk vda is 1 GiB, the image needs 2"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(json(&r)["command"], "power_off");
    assert_eq!(
        e.state(),
        State::DeployFailed {
            reason: "disk vda is 1 GiB, the image needs 2".into()
        }
    );
    e.wait("powered off", |e| e.bmc.power_state() == PowerState::Off)
        .await;
    // Bad requests.
    let bad = async |body: &str| {
        e.api
            .respond(&req(Method::POST, "/v1/nodes/n1/deploy", Some(TOKEN), body))
            .await
            .status
    };
    assert_eq!(bad("{}").await, 400);
    assert_eq!(bad(r#"{"image": " "}"#).await, 400);
    assert_eq!(bad(r#"{"image": "tiny", "bogus": 1}"#).await, 400);
    assert_eq!(
        bad(r#"{"image": "tiny", "root_hint": "biggest"}"#).await,
        400
    );
    // No token, a broken body, a wrong method.
    for (method, path, body, want) in [
        (Method::POST, "/v1/nodes/n1/deploy", "{}", 401),
        (Method::POST, "/v1/agent/progress", "{", 400),
        (Method::GET, "/v1/node/booted", "", 405),
    ] {
        let r = e.api.respond(&req(method.clone(), path, None, body)).await;
        assert_eq!(r.status, want, "{method} {path}: {}", r.body);
    }
}

#[tokio::test]
async fn a_silent_boot_times_out_into_deploy_failed() {
    let e = setup(Timeouts {
        deploy_ms: 300,
        ..Timeouts::default()
    });
    e.deploy_queued().await;
    let op = e.deploy_command().unwrap().op;
    e.progress(op, "done", 14, None).await;
    e.wait("timed out", |e| e.state().is_failed()).await;
    assert!(
        e.state().reason().unwrap().contains("booted"),
        "{:?}",
        e.state()
    );
}

#[tokio::test]
async fn a_restart_fails_unwritten_deploys_and_keeps_written_ones() {
    let e = setup(Timeouts::default());
    e.deploy_queued().await;
    // A second daemon over the same store: the agent command is gone with the first one.
    let again = Daemon::new(e.d.store.clone(), e.d.settings.clone()).unwrap();
    again.resume().unwrap();
    assert!(
        e.state().reason().is_some_and(|r| r.contains("restarted")),
        "{:?}",
        e.state()
    );
    // Written: it only waits for "booted", which the store can still check.
    e.deploy_queued().await;
    let cmd = e.deploy_command().unwrap();
    let tok = e.agent_token().unwrap();
    assert_eq!(e.progress(cmd.op, "done", 14, None).await.status, 200);
    let again = Daemon::new(e.d.store.clone(), e.d.settings.clone()).unwrap();
    assert_eq!(again.resume().unwrap(), 1, "its deadline is re-armed");
    assert_eq!(e.state(), State::Deploying);
    // The boot's agent token survives the restart (same key, same step).
    assert!(again.agent_token_ok("n1", &tok).unwrap());
    assert!(!again.agent_token_ok("n1", "forged").unwrap());
    let api = Api::new(again, TOKEN);
    let r = api
        .respond(&req(
            Method::POST,
            "/v1/node/booted",
            Some(cmd.credential.expose()),
            "",
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(e.state(), State::Active);
}

/// The boot watchdog power-cycles a node that did not PXE-boot in time (a lost boot, or a
/// reboot the daemon ordered just before it was killed): the ramdisk that boots then must still
/// get the deploy. Found by the crash campaign: the retry's power-on dropped the command, the
/// agent heartbeated with nothing to do until the deploy timed out.
#[tokio::test]
async fn a_boot_watchdog_retry_keeps_the_deploy_command() {
    let e = setup(Timeouts {
        boot_ms: 300,
        boot_retries_max: 2,
        ..Timeouts::default()
    });
    e.deploy_queued().await;
    let op = e.deploy_command().unwrap().op;
    e.wait("powered on into PXE", |e| e.bmc.boots() == 1).await;
    // No script fetched: the watchdog cycles the node once more.
    e.wait("a second power-on", |e| e.bmc.boots() == 2).await;
    let n = nodes::get(e.d.store(), "n1").unwrap().unwrap().0;
    assert_eq!(
        (n.lifecycle.state, n.lifecycle.boot_retries),
        (State::Deploying, 1)
    );
    assert_eq!(
        e.deploy_command().map(|c| c.op),
        Some(op),
        "the ramdisk booted by the retry still gets its deploy"
    );
}
