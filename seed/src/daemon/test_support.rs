//! What the daemon's unit tests share: an [`ApiRequest`] as the HTTP edge would hand it over,
//! a node behind the fake power driver, the settings, a fake BMC the test keeps.

use netboot::http::ApiRequest;

/// `method path` (a `?query` is split off as the server does) from peer 10.0.0.2, with
/// `Authorization: Bearer <token>` when there is one, and `body`.
pub(crate) fn request(
    method: http::Method,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> ApiRequest {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (path, None),
    };
    let mut headers = http::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
    }
    ApiRequest {
        method,
        path: path.into(),
        query,
        headers,
        body: bytes::Bytes::from(body.to_string()),
        peer: "10.0.0.2:1234".parse().unwrap(),
    }
}

/// A node named `name` with NIC `mac` behind the fake power driver (admin / hunter2), in the
/// lifecycle's first state.
pub(crate) fn fake_node(name: &str, mac: &str) -> crate::inventory::Node {
    use crate::inventory::{Bmc, Node, PowerDriver, Secret};
    Node::new(
        name,
        vec![mac.parse().unwrap()],
        Bmc {
            driver: PowerDriver::Fake,
            address: "fake".into(),
            port: 623,
            username: "admin".into(),
            password: Secret::new("hunter2"),
            allow_ipmi15: false,
        },
        0,
    )
}

/// The daemon settings of the unit tests: server 10.0.0.1:8080, a 7 s heartbeat.
pub(crate) fn settings(
    timeouts: crate::lifecycle::Timeouts,
    provide_after_inspect: bool,
) -> super::Settings {
    super::Settings {
        server_ip: "10.0.0.1".parse().unwrap(),
        http_port: 8080,
        timeouts,
        heartbeat_secs: 7,
        provide_after_inspect,
        agent_tls: None,
    }
}

/// Route `node`'s power through a fake BMC the test keeps (its boots and power history).
pub(crate) fn attach_fake_bmc(
    d: &super::Daemon,
    node: &str,
) -> std::sync::Arc<crate::power::FakeBmc> {
    use crate::power::{FakeBmc, FakePower, Password};
    let bmc = FakeBmc::new(node, "admin", Password::new("hunter2"));
    super::lock(&d.drivers).by_node.insert(
        node.into(),
        std::sync::Arc::new(FakePower::new(
            bmc.clone(),
            "admin",
            Password::new("hunter2"),
        )),
    );
    bmc
}

/// Serve `api` on the operators' listener at 127.0.0.1:<ephemeral>, from its own runtime thread,
/// until the returned token is cancelled: `(HOST:PORT, token)`.
pub(crate) fn serve(api: super::api::Api) -> (String, tokio_util::sync::CancellationToken) {
    let api = std::sync::Arc::new(api);
    let stop = tokio_util::sync::CancellationToken::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let s2 = stop.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            super::admin::serve(l, None, api, s2).await;
        });
    });
    let addr = rx.recv().unwrap();
    (format!("{addr}"), stop)
}
