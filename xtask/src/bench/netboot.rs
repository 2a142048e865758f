//! `cargo xtask bench netboot`: `seed netboot` (configured by the contract's TOML) against Kea,
//! tftpd-hpa and nginx, each pair measured in the same run with the same client on the same link.
//!
//! - DHCP: `perfdhcp -4 -B` from the client namespace; the best 4-way exchange rate with at most
//!   2.5% of exchanges lost, found by a bounded ladder of short runs and two bisection steps.
//! - TFTP: `atftp` fetches a 32 MiB random file (verified byte for byte), lockstep at blksize 512
//!   and 1428 and windowed (RFC 7440, windowsize 16), on a veth pair and on the delay link.
//! - HTTP: `wrk -c 50 -t 2` on the same 32 MiB file, plus each server's peak RSS (VmHWM).
//!
//! Every server runs in the server namespace under a [`Child`] guard; every client command is
//! bounded in time; namespaces go away on return, on error and on Ctrl-C.
//!
//! The seed gets one config file per service: the contract's top level plus that section only,
//! so a service that is missing or broken costs only its own rows. For DHCP, e.g.:
//!
//! ```toml
//! interface = "veth-s"
//! server_ip = "10.208.0.1"
//! state_dir = "/tmp/seed-bench-XXXX/seed-state-dhcp"
//!
//! [dhcp]
//! mode = "authoritative"
//! subnet = "10.208.0.0/16"
//! lease_time = 3600
//! pool = { start = "10.208.1.1", end = "10.208.254.254" }
//! discovery = true
//! ```
//!
//! TFTP: `[tftp] root = "<payload dir>"`, `port = 69`; HTTP: `[http] root = "<payload dir>"`,
//! `port = 8080`, fetched as `http://10.208.0.1:8080/big.bin`.

use super::env::{
    self, indent, run_bounded, tail, Child, Lan, LinkKind, CLIENT_IP, POOL, SERVER_IP, SUBNET,
};
use super::{print_table, Progress, Row};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Arguments of `cargo xtask bench netboot`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Use the debug build of seed instead of building release (for working on the bench
    /// itself; the seed's figures are then not representative).
    #[arg(long)]
    debug: bool,
    /// Run only these protocols (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Proto>,
    /// One-way hold of the delay link in µs for the second set of TFTP runs; 0 skips them.
    #[arg(long, default_value_t = 250)]
    delay_us: u64,
    /// Duration of each wrk run, in seconds.
    #[arg(long, default_value_t = 10)]
    http_secs: u64,
    /// Duration of each perfdhcp run, in seconds.
    #[arg(long, default_value_t = 5)]
    dhcp_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Proto {
    Dhcp,
    Tftp,
    Http,
}

/// Size of the TFTP/HTTP payload.
const BIG: usize = 32 << 20;
/// Size of the probe file fetched before measuring (proves the server works; checks options).
const PROBE: usize = 100_000;
/// Drops allowed at the reported DHCP rate, in percent of started exchanges.
const MAX_DROP_PCT: f64 = 2.5;
/// The DHCP rate ladder (exchanges/s requested); the search stops at the first failing step.
const LADDER: &[u32] = &[250, 500, 1000, 2000, 4000, 8000, 16000];
/// Distinct client MACs perfdhcp cycles through (well below the pool size).
const DHCP_CLIENTS: &str = "20000";
const WINDOW: u16 = 16;
const TFTP_PORT: u16 = 69;
const HTTP_PORT: u16 = 8080;
const STARTUP: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Seed,
    Peer,
}

/// A figure, or why there is none.
type Fig = Result<f64, String>;

struct Bench {
    args: Args,
    seed_bin: PathBuf,
    dir: tempfile::TempDir,
    files: PathBuf,
    big: Vec<u8>,
    probe: Vec<u8>,
    p: Progress,
}

pub fn run(args: Args) -> Result<()> {
    let p = Progress::new();
    let all = [Proto::Dhcp, Proto::Tftp, Proto::Http];
    let protos: Vec<Proto> = if args.only.is_empty() {
        all.to_vec()
    } else {
        all.into_iter().filter(|x| args.only.contains(x)).collect()
    };
    preflight(&protos)?;
    env::remove_stale_netns();
    env::install_interrupt_handler()?;
    let seed_bin = build_seed(args.debug)?;
    p.say(format!("seed binary: {}", seed_bin.display()));

    let dir = tempfile::Builder::new()
        .prefix("seed-bench-")
        .tempdir()
        .context("creating the bench's temp dir")?;
    env::register_dir(dir.path());
    let files = dir.path().join("files");
    std::fs::create_dir(&files)?;
    // tftpd-hpa chroots into the root and drops to user `tftp`: it must be able to read.
    set_mode(dir.path(), 0o755)?;
    set_mode(&files, 0o755)?;
    let mut big = vec![0u8; BIG];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut big))
        .context("reading /dev/urandom")?;
    let probe = big[..PROBE].to_vec();
    for (name, data) in [("big.bin", &big), ("probe.bin", &probe)] {
        let path = files.join(name);
        std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
        set_mode(&path, 0o644)?;
    }
    p.say(format!(
        "payload: {} MiB of random bytes in {}",
        BIG >> 20,
        files.display()
    ));

    let b = Bench {
        args,
        seed_bin,
        dir,
        files,
        big,
        probe,
        p,
    };
    let mut report = Report::default();
    if b.args.debug {
        report.note("--debug: the seed is a debug build; its figures are not representative");
    }
    if protos.contains(&Proto::Dhcp) {
        b.dhcp(&mut report)?;
    }
    if protos.contains(&Proto::Tftp) {
        b.tftp(&mut report)?;
    }
    if protos.contains(&Proto::Http) {
        b.http(&mut report)?;
    }
    b.p.say("done");
    println!();
    println!(
        "seed netboot vs peers ({} build of seed, {}); figures from one run on this machine",
        if b.args.debug { "DEBUG" } else { "release" },
        seed_revision()
    );
    print_table(&report.rows);
    if !report.notes.is_empty() {
        println!("\nnotes:");
        for (i, n) in report.notes.iter().enumerate() {
            println!("[{}] {}", i + 1, n.replace('\n', "\n    "));
        }
    }
    println!("\npeers: {}", peer_versions(&protos).join(", "));
    Ok(())
}

/// Rows and numbered notes (failure reasons, caveats), deduplicated.
#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    fn note(&mut self, text: &str) -> usize {
        if let Some(i) = self.notes.iter().position(|n| n == text) {
            return i + 1;
        }
        self.notes.push(text.to_string());
        self.notes.len()
    }

    fn cell(&mut self, f: &Fig, show: impl Fn(f64) -> String) -> String {
        match f {
            Ok(v) => show(*v),
            Err(e) => format!("FAILED [{}]", self.note(e)),
        }
    }

    /// A row whose target is `seed >= factor * reference`.
    #[allow(clippy::too_many_arguments)]
    fn row(
        &mut self,
        metric: String,
        seed: &Fig,
        peer: String,
        target: String,
        reference: &Fig,
        factor: f64,
        show: impl Fn(f64) -> String,
    ) {
        let seed_cell = self.cell(seed, &show);
        let met = match (seed, reference) {
            (Ok(s), Ok(r)) => if *s >= factor * r { "yes" } else { "NO" }.to_string(),
            (Err(_), _) => "NO (no figure)".into(),
            (Ok(_), Err(_)) => "? (no reference)".into(),
        };
        self.rows.push(Row {
            metric,
            seed: seed_cell,
            peer,
            target,
            met,
        });
    }
}

fn mib(v: f64) -> String {
    format!("{v:.1}")
}

impl Bench {
    // ---------------------------------------------------------------- DHCP

    fn dhcp(&self, report: &mut Report) -> Result<()> {
        report.note(&format!(
            "DHCP: perfdhcp -4 -B -R {DHCP_CLIENTS} in {}-second runs at rising -r ({LADDER:?}, \
             then 2 bisection steps); drops = DISCOVERs sent without a final ACK; pool {} - {}. \
             Kea: memfile lease file (persist), raw sockets, its default threading",
            self.args.dhcp_secs, POOL.0, POOL.1
        ));
        self.p.say("DHCP: creating namespaces (veth)");
        let lan = Lan::new(LinkKind::Veth)?;
        let mut figs = Vec::new();
        let mut rss = Vec::new();
        for who in [Who::Peer, Who::Seed] {
            let name = match who {
                Who::Peer => "kea-dhcp4",
                Who::Seed => "seed",
            };
            let res = (|| -> Result<(DhcpFig, Option<u64>), String> {
                let mut server = match who {
                    Who::Peer => self.start_kea(&lan),
                    Who::Seed => self.start_seed(&lan, "dhcp", &self.seed_dhcp_toml(&lan)),
                }
                .map_err(|e| format!("{name}: {e:#}"))?;
                server
                    .wait_ready("listening on UDP 67", STARTUP, || {
                        lan.server.listening("u", 67)
                    })
                    .map_err(|e| startup_error(who, &e))?;
                let fig = self.dhcp_search(&lan, name, &mut server)?;
                Ok((fig, server.vm_hwm_kib()))
            })();
            match res {
                Ok((fig, hwm)) => {
                    self.p.say(format!(
                        "DHCP {name}: best {:.0} exchanges/s at {:.2}% drops{}",
                        fig.rate, fig.drop_pct, fig.note
                    ));
                    figs.push(Ok(fig));
                    rss.push(
                        hwm.map(|k| k as f64 / 1024.0)
                            .ok_or_else(|| "no VmHWM".into()),
                    );
                }
                Err(e) => {
                    self.p
                        .say(format!("DHCP {name}: FAILED: {}", first_line(&e)));
                    figs.push(Err(e.clone()));
                    rss.push(Err(e));
                }
            }
        }
        let (peer, seed) = (&figs[0], &figs[1]);
        let rate = |f: &Result<DhcpFig, String>| -> Fig {
            f.as_ref().map(|d| d.rate).map_err(Clone::clone)
        };
        let peer_cell = report.cell(&rate(peer), show_dhcp(peer));
        report.row(
            format!("DHCP 4-way exchanges at ≤{MAX_DROP_PCT}% drops [1/s]"),
            &rate(seed),
            peer_cell,
            "≥ Kea".into(),
            &rate(peer),
            1.0,
            show_dhcp(seed),
        );
        self.rss_row(report, "DHCP", "kea-dhcp4", &rss[1], &rss[0]);
        Ok(())
    }

    fn start_kea(&self, lan: &Lan) -> Result<Child> {
        let kdir = self.dir.path().join("kea");
        std::fs::create_dir_all(&kdir)?;
        let (pool_start, pool_end) = POOL;
        let cfg = format!(
            r#"{{"Dhcp4": {{
  "interfaces-config": {{"interfaces": ["{ifname}"], "dhcp-socket-type": "raw"}},
  "lease-database": {{"type": "memfile", "persist": true, "name": "{leases}", "lfc-interval": 0}},
  "valid-lifetime": 3600,
  "subnet4": [{{"id": 1, "subnet": "{SUBNET}", "pools": [{{"pool": "{pool_start} - {pool_end}"}}]}}],
  "loggers": [{{"name": "kea-dhcp4", "output_options": [{{"output": "{log}"}}], "severity": "WARN"}}]
}}}}"#,
            ifname = lan.server_if,
            leases = kdir.join("leases.csv").display(),
            log = kdir.join("kea.log").display(),
        );
        let path = kdir.join("kea-dhcp4.json");
        std::fs::write(&path, cfg)?;
        let mut cmd = lan.server.cmd("kea-dhcp4");
        cmd.arg("-c")
            .arg(&path)
            .env("KEA_PIDFILE_DIR", &kdir)
            .env("KEA_LOCKFILE_DIR", &kdir);
        Child::spawn("kea-dhcp4", cmd, self.dir.path())
    }

    fn seed_dhcp_toml(&self, lan: &Lan) -> String {
        let (start, end) = POOL;
        format!(
            r#"[dhcp]
mode = "authoritative"
subnet = "{SUBNET}"
lease_time = 3600
pool = {{ start = "{start}", end = "{end}" }}
discovery = true
"#
        ) + &format!(
            "# client side of the bench: {} on {}\n",
            CLIENT_IP, lan.client_if
        )
    }

    fn perfdhcp(&self, lan: &Lan, rate: u32, secs: u64) -> Result<Perf, String> {
        let ran = run_bounded(
            lan.client
                .cmd("perfdhcp")
                .args(["-4", "-B", "-l", &lan.client_if, "-R", DHCP_CLIENTS])
                .args(["-r", &rate.to_string(), "-p", &secs.to_string()]),
            Duration::from_secs(secs + 20),
        )
        .map_err(|e| format!("perfdhcp: {e:#}"))?;
        parse_perfdhcp(&ran.all()).ok_or_else(|| {
            format!(
                "perfdhcp at {rate}/s printed no statistics ({}):\n{}",
                ran.status,
                indent(&tail(&ran.all(), 8))
            )
        })
    }

    /// The ladder, then two bisection steps between the last passing and first failing rate.
    fn dhcp_search(&self, lan: &Lan, name: &str, server: &mut Child) -> Result<DhcpFig, String> {
        let probe = self.perfdhcp(lan, 10, 2)?;
        if probe.acked == 0 {
            return Err(format!(
                "{name} completed no DHCP exchange (DISCOVER-OFFER-REQUEST-ACK) at 10/s for 2 s: \
                 {} DISCOVERs sent, none acknowledged{}",
                probe.sent,
                exit_hint(server)
            ));
        }
        let secs = self.args.dhcp_secs;
        let mut best: Option<(u32, Perf)> = None;
        let mut fail: Option<u32> = None;
        let mut note = String::new();
        let mut try_rate = |r: u32, best: &mut Option<(u32, Perf)>| -> Result<bool, String> {
            let perf = self.perfdhcp(lan, r, secs)?;
            let ok = perf.drop_pct() <= MAX_DROP_PCT;
            self.p.say(format!(
                "DHCP {name}: -r {r}: {:.0} exchanges/s, {:.2}% drops → {}",
                perf.rate,
                perf.drop_pct(),
                if ok { "ok" } else { "too many drops" }
            ));
            if let Some(st) = server.exited() {
                return Err(format!(
                    "{name} exited during the run ({st}):\n{}",
                    indent(&server.log_tail(8))
                ));
            }
            if ok && best.as_ref().is_none_or(|(_, b)| perf.rate > b.rate) {
                *best = Some((r, perf));
            }
            Ok(ok)
        };
        for &r in LADDER {
            if try_rate(r, &mut best)? {
                let (_, b) = best.as_ref().expect("set when ok");
                if b.rate < 0.9 * r as f64 {
                    note = ", perfdhcp-bound".into();
                    break;
                }
            } else {
                fail = Some(r);
                break;
            }
        }
        if let (Some(hi), Some((lo, _))) = (fail, best.as_ref()) {
            let (mut lo, mut hi) = (*lo, hi);
            for _ in 0..2 {
                let mid = (lo + hi) / 2;
                if try_rate(mid, &mut best)? {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
        } else if fail.is_none() && note.is_empty() {
            note = format!(", ladder top {}/s", LADDER[LADDER.len() - 1]);
        }
        match best {
            Some((_, b)) => Ok(DhcpFig {
                rate: b.rate,
                drop_pct: b.drop_pct(),
                note,
            }),
            None => Err(format!(
                "{name} lost more than {MAX_DROP_PCT}% of exchanges even at {}/s",
                LADDER[0]
            )),
        }
    }

    // ---------------------------------------------------------------- TFTP

    fn tftp(&self, report: &mut Report) -> Result<()> {
        report.note(
            "TFTP: wall time of one atftp fetch of the 32 MiB file (process start included), each \
             verified byte for byte; median of 3 on veth, 1 run on the delay link. On a veth pair \
             the client itself may be the ceiling for windowed transfers",
        );
        let mut links = vec![LinkKind::Veth];
        if self.args.delay_us > 0 {
            links.push(LinkKind::Delayed(Duration::from_micros(self.args.delay_us)));
        }
        let mut rss: [Option<Fig>; 2] = [None, None];
        for link in links {
            // (blksize, window, repetitions): 512 lockstep costs 65536 round trips, so it runs on
            // the veth only.
            let cases: Vec<(u16, Option<u16>, usize)> = match link {
                LinkKind::Veth => vec![(512, None, 3), (1428, None, 3), (1428, Some(WINDOW), 3)],
                LinkKind::Delayed(_) => vec![(1428, None, 1), (1428, Some(WINDOW), 1)],
            };
            self.p.say(format!("TFTP: creating namespaces ({link})"));
            let lan = Lan::new(link)?;
            let mut figs: Vec<[Fig; 2]> = cases
                .iter()
                .map(|_| [Err(String::new()), Err(String::new())])
                .collect();
            for (wi, who) in [Who::Peer, Who::Seed].into_iter().enumerate() {
                let name = match who {
                    Who::Peer => "tftpd-hpa",
                    Who::Seed => "seed",
                };
                let started = (|| -> Result<(Child, bool), String> {
                    let mut server = match who {
                        Who::Peer => {
                            let mut cmd = lan.server.cmd("in.tftpd");
                            cmd.args(["-L", "-s"])
                                .arg(&self.files)
                                .args(["-a", &format!("{SERVER_IP}:{TFTP_PORT}")]);
                            Child::spawn("tftpd-hpa", cmd, self.dir.path())
                        }
                        Who::Seed => self.start_seed(
                            &lan,
                            "tftp",
                            &format!(
                                "[tftp]\nroot = \"{}\"\nport = {TFTP_PORT}\n",
                                self.files.display()
                            ),
                        ),
                    }
                    .map_err(|e| format!("{name}: {e:#}"))?;
                    server
                        .wait_ready("listening on UDP 69", STARTUP, || {
                            lan.server.listening("u", TFTP_PORT)
                        })
                        .map_err(|e| startup_error(who, &e))?;
                    let trace = self
                        .tftp_get(
                            &lan,
                            "probe.bin",
                            1428,
                            Some(WINDOW),
                            &self.probe,
                            true,
                            Duration::from_secs(20),
                        )
                        .map_err(|e| {
                            format!(
                                "{name} did not serve a {PROBE}-byte probe file: {e:#}{}",
                                exit_hint(&mut server)
                            )
                        })?
                        .1;
                    let windowed = trace
                        .lines()
                        .any(|l| l.contains("received OACK") && l.contains("windowsize"));
                    Ok((server, windowed))
                })();
                let (mut server, windowed) = match started {
                    Ok(s) => s,
                    Err(e) => {
                        self.p
                            .say(format!("TFTP {name} ({link}): FAILED: {}", first_line(&e)));
                        for f in figs.iter_mut() {
                            f[wi] = Err(e.clone());
                        }
                        if link == LinkKind::Veth {
                            rss[wi] = Some(Err(e));
                        }
                        continue;
                    }
                };
                if !windowed {
                    self.p
                        .say(format!("TFTP {name}: OACK omits windowsize: no RFC 7440"));
                }
                for (ci, &(blksize, window, reps)) in cases.iter().enumerate() {
                    if window.is_some() && !windowed && who == Who::Peer {
                        figs[ci][wi] = Err(format!(
                            "{name} has no RFC 7440 windowsize (its OACK omits the option): reported lockstep only"
                        ));
                        continue;
                    }
                    figs[ci][wi] =
                        self.tftp_case(&lan, name, &mut server, blksize, window, reps, link);
                    if window.is_some() && !windowed {
                        if let Ok(v) = figs[ci][wi] {
                            figs[ci][wi] = Err(format!(
                                "{name} ignored windowsize (its OACK omits it): the transfer ran lockstep at {v:.1} MiB/s"
                            ));
                        }
                    }
                }
                if link == LinkKind::Veth {
                    rss[wi] = Some(
                        server
                            .vm_hwm_kib()
                            .map(|k| k as f64 / 1024.0)
                            .ok_or_else(|| "no VmHWM".to_string()),
                    );
                }
            }
            if let Some(l) = &lan.link {
                let (frames, dropped, mean) = l.stats();
                self.p.say(format!(
                    "TFTP: delay link forwarded {frames} frames, dropped {dropped}, mean hold {} µs",
                    mean.as_micros()
                ));
                report.note(&format!(
                    "{link}: two TAPs joined by a userspace forwarder holding each frame {} µs each way \
                     (measured mean hold {} µs over {frames} frames, {dropped} dropped)",
                    self.args.delay_us,
                    mean.as_micros()
                ));
            }
            let lock1428 = cases.iter().position(|c| c.0 == 1428 && c.1.is_none());
            for (ci, &(blksize, window, _)) in cases.iter().enumerate() {
                let [peer, seed] = &figs[ci];
                match window {
                    None => {
                        let peer_cell = report.cell(peer, mib);
                        report.row(
                            format!("TFTP lockstep blksize {blksize}, {link} [MiB/s]"),
                            seed,
                            peer_cell,
                            "≥ tftpd-hpa".into(),
                            peer,
                            1.0,
                            mib,
                        );
                    }
                    Some(w) => {
                        let peer_cell = match peer {
                            Ok(v) => mib(*v),
                            Err(e) if e.contains("RFC 7440") => format!("n/a [{}]", report.note(e)),
                            Err(e) => format!("FAILED [{}]", report.note(e)),
                        };
                        let reference = lock1428
                            .map(|i| figs[i][1].clone())
                            .unwrap_or(Err("no lockstep figure".into()));
                        report.row(
                            format!("TFTP windowsize {w} blksize {blksize}, {link} [MiB/s]"),
                            seed,
                            peer_cell,
                            "≥ 5× seed lockstep 1428".into(),
                            &reference,
                            5.0,
                            mib,
                        );
                    }
                }
            }
        }
        if let [Some(peer), Some(seed)] = &rss {
            self.rss_row(report, "TFTP", "tftpd-hpa", seed, peer);
        }
        Ok(())
    }

    /// `reps` transfers of the big file; the median rate in MiB/s.
    #[allow(clippy::too_many_arguments)]
    fn tftp_case(
        &self,
        lan: &Lan,
        name: &str,
        server: &mut Child,
        blksize: u16,
        window: Option<u16>,
        reps: usize,
        link: LinkKind,
    ) -> Fig {
        let label = match window {
            Some(w) => format!("windowsize {w} blksize {blksize}"),
            None => format!("lockstep blksize {blksize}"),
        };
        let mut rates = Vec::new();
        for _ in 0..reps {
            let (took, _) = self
                .tftp_get(
                    lan,
                    "big.bin",
                    blksize,
                    window,
                    &self.big,
                    false,
                    Duration::from_secs(180),
                )
                .map_err(|e| format!("{name}, {label}, {link}: {e:#}{}", exit_hint(server)))?;
            let rate = (BIG as f64 / (1 << 20) as f64) / took.as_secs_f64();
            self.p.say(format!(
                "TFTP {name} {label} ({link}): {:.2} s, {rate:.1} MiB/s",
                took.as_secs_f64()
            ));
            rates.push(rate);
        }
        rates.sort_by(f64::total_cmp);
        Ok(rates[rates.len() / 2])
    }

    /// Fetch `remote` with atftp; check it equals `expect`. Returns the wall time and the output.
    #[allow(clippy::too_many_arguments)]
    fn tftp_get(
        &self,
        lan: &Lan,
        remote: &str,
        blksize: u16,
        window: Option<u16>,
        expect: &[u8],
        trace: bool,
        timeout: Duration,
    ) -> Result<(Duration, String)> {
        let out = self.dir.path().join("got.bin");
        let _ = std::fs::remove_file(&out);
        let mut cmd = lan.client.cmd("atftp");
        cmd.args(["-g", "-r", remote, "-l"])
            .arg(&out)
            .args(["--option", &format!("blksize {blksize}")]);
        if let Some(w) = window {
            cmd.args(["--option", &format!("windowsize {w}")]);
        }
        if trace {
            cmd.arg("--trace");
        }
        cmd.args([&SERVER_IP.to_string(), &TFTP_PORT.to_string()]);
        let ran = run_bounded(&mut cmd, timeout)?;
        let got = std::fs::read(&out).unwrap_or_default();
        if !ran.status.success() || got != expect {
            bail!(
                "atftp {} ({}; received {} of {} bytes{}):\n{}",
                remote,
                ran.status,
                got.len(),
                expect.len(),
                if got.len() == expect.len() {
                    ", CONTENT DIFFERS"
                } else {
                    ""
                },
                indent(&tail(&ran.all(), 6))
            );
        }
        Ok((ran.elapsed, ran.all()))
    }

    // ---------------------------------------------------------------- HTTP

    fn http(&self, report: &mut Report) -> Result<()> {
        report.note(&format!(
            "HTTP: wrk -c 50 -t 2 -d {}s --timeout 30s after one curl GET verified byte for byte; \
             MiB/s = wrk's Transfer/sec. nginx: one process (master_process off), sendfile on",
            self.args.http_secs
        ));
        self.p.say("HTTP: creating namespaces (veth)");
        let lan = Lan::new(LinkKind::Veth)?;
        let mut figs: Vec<Fig> = Vec::new();
        let mut rss: Vec<Fig> = Vec::new();
        for who in [Who::Peer, Who::Seed] {
            let name = match who {
                Who::Peer => "nginx",
                Who::Seed => "seed",
            };
            let res = (|| -> Result<(f64, Fig), String> {
                let mut server = match who {
                    Who::Peer => self.start_nginx(&lan),
                    Who::Seed => self.start_seed(
                        &lan,
                        "http",
                        &format!(
                            "[http]\nroot = \"{}\"\nport = {HTTP_PORT}\n",
                            self.files.display()
                        ),
                    ),
                }
                .map_err(|e| format!("{name}: {e:#}"))?;
                server
                    .wait_ready("listening on TCP 8080", STARTUP, || {
                        lan.server.listening("t", HTTP_PORT)
                    })
                    .map_err(|e| startup_error(who, &e))?;
                self.curl_check(&lan)
                    .map_err(|e| format!("{name}: {e:#}{}", exit_hint(&mut server)))?;
                let rate = self
                    .wrk(&lan)
                    .map_err(|e| format!("{name}: {e:#}{}", exit_hint(&mut server)))?;
                let hwm = server
                    .vm_hwm_kib()
                    .map(|k| k as f64 / 1024.0)
                    .ok_or_else(|| format!("{name}: no VmHWM (exited?)"));
                Ok((rate, hwm))
            })();
            match res {
                Ok((rate, hwm)) => {
                    self.p
                        .say(format!("HTTP {name}: {rate:.1} MiB/s with 50 clients"));
                    figs.push(Ok(rate));
                    rss.push(hwm);
                }
                Err(e) => {
                    self.p
                        .say(format!("HTTP {name}: FAILED: {}", first_line(&e)));
                    figs.push(Err(e.clone()));
                    rss.push(Err(e));
                }
            }
        }
        let peer_cell = report.cell(&figs[0], mib);
        report.row(
            format!("HTTP GET {} MiB, 50 clients (wrk) [MiB/s]", BIG >> 20),
            &figs[1],
            peer_cell,
            "≥ 0.9× nginx".into(),
            &figs[0],
            0.9,
            mib,
        );
        self.rss_row(report, "HTTP", "nginx", &rss[1], &rss[0]);
        Ok(())
    }

    fn start_nginx(&self, lan: &Lan) -> Result<Child> {
        let ndir = self.dir.path().join("nginx");
        std::fs::create_dir_all(&ndir)?;
        let d = ndir.display();
        let cfg = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  default_type application/octet-stream;\n\
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             server {{ listen {SERVER_IP}:{HTTP_PORT}; root {files}; }}\n}}\n",
            files = self.files.display()
        );
        let path = ndir.join("nginx.conf");
        std::fs::write(&path, cfg)?;
        let mut cmd = lan.server.cmd("nginx");
        cmd.arg("-p")
            .arg(&ndir)
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(ndir.join("error.log"));
        Child::spawn("nginx", cmd, self.dir.path())
    }

    fn url(&self) -> String {
        format!("http://{SERVER_IP}:{HTTP_PORT}/big.bin")
    }

    /// One full GET with curl, checked byte for byte, before any load.
    fn curl_check(&self, lan: &Lan) -> Result<()> {
        let out = self.dir.path().join("got.bin");
        let _ = std::fs::remove_file(&out);
        let ran = run_bounded(
            lan.client
                .cmd("curl")
                .args(["-sS", "--max-time", "60", "-w", "%{http_code}", "-o"])
                .arg(&out)
                .arg(self.url()),
            Duration::from_secs(70),
        )?;
        let got = std::fs::read(&out).unwrap_or_default();
        let code = ran.stdout.trim();
        if !ran.status.success() || code != "200" || got != self.big {
            bail!(
                "GET {} gave HTTP {code:?}, {} of {} bytes{} ({}): {}",
                self.url(),
                got.len(),
                BIG,
                if got.len() == BIG {
                    ", CONTENT DIFFERS"
                } else {
                    ""
                },
                ran.status,
                ran.stderr.trim()
            );
        }
        Ok(())
    }

    /// wrk with 50 connections; MiB/s.
    fn wrk(&self, lan: &Lan) -> Result<f64> {
        let secs = self.args.http_secs;
        let ran = run_bounded(
            lan.client
                .cmd("wrk")
                .args(["-c", "50", "-t", "2", "--timeout", "30s"])
                .args(["-d", &format!("{secs}s")])
                .arg(self.url()),
            Duration::from_secs(secs + 40),
        )?;
        let text = ran.all();
        if let Some(l) = text.lines().find(|l| l.contains("Non-2xx")) {
            bail!("wrk: {}", l.trim());
        }
        if let Some(l) = text.lines().find(|l| l.contains("Socket errors")) {
            self.p.say(format!("HTTP: wrk {}", l.trim()));
        }
        parse_wrk_rate(&text).with_context(|| {
            format!(
                "wrk printed no Transfer/sec ({}):\n{}",
                ran.status,
                indent(&tail(&text, 8))
            )
        })
    }

    // ---------------------------------------------------------------- shared

    /// Start `seed netboot` in the server namespace with the contract's top level plus `section`.
    fn start_seed(&self, lan: &Lan, service: &str, section: &str) -> Result<Child> {
        let state = self.dir.path().join(format!("seed-state-{service}"));
        std::fs::create_dir_all(&state)?;
        let toml = format!(
            "interface = \"{}\"\nserver_ip = \"{SERVER_IP}\"\nstate_dir = \"{}\"\n\n{section}",
            lan.server_if,
            state.display()
        );
        let path = self.dir.path().join(format!("seed-{service}.toml"));
        std::fs::write(&path, toml)?;
        let mut cmd = lan.server.cmd(&self.seed_bin);
        cmd.arg("netboot")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "warn");
        Child::spawn(&format!("seed {service}"), cmd, self.dir.path())
    }

    fn rss_row(&self, report: &mut Report, what: &str, peer_name: &str, seed: &Fig, peer: &Fig) {
        let peer_cell = report.cell(peer, |v| format!("{v:.1} ({peer_name})"));
        let seed_cell = report.cell(seed, mib);
        report.rows.push(Row {
            metric: format!("peak RSS (VmHWM) after the {what} runs [MiB]"),
            seed: seed_cell,
            peer: peer_cell,
            target: "report".into(),
            met: "—".into(),
        });
    }
}

/// How a DHCP figure is shown: the rate with its drops and caveats.
fn show_dhcp(f: &Result<DhcpFig, String>) -> impl Fn(f64) -> String + '_ {
    move |v: f64| match f {
        Ok(d) => format!("{v:.0} ({:.2}% drops{})", d.drop_pct, d.note),
        Err(_) => format!("{v:.0}"),
    }
}

/// One DHCP result.
struct DhcpFig {
    rate: f64,
    drop_pct: f64,
    note: String,
}

/// What one perfdhcp run printed.
#[derive(Debug, PartialEq)]
struct Perf {
    /// Completed 4-way exchanges per second.
    rate: f64,
    /// DISCOVERs sent.
    sent: u64,
    /// ACKs received.
    acked: u64,
}

impl Perf {
    /// Exchanges started but not completed, in percent.
    fn drop_pct(&self) -> f64 {
        if self.sent == 0 {
            return 100.0;
        }
        100.0 * (1.0 - self.acked as f64 / self.sent as f64)
    }
}

fn parse_perfdhcp(out: &str) -> Option<Perf> {
    let mut section = "";
    let (mut rate, mut sent, mut acked) = (0.0, None, 0);
    let num = |l: &str, key: &str| {
        l.trim()
            .strip_prefix(key)
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    for line in out.lines() {
        if let Some(s) = line.trim().strip_prefix("***Statistics for: ") {
            section = s.trim_end_matches('*');
        } else if let Some(r) = line.trim().strip_prefix("Rate: ") {
            rate = r.split_whitespace().next()?.parse().ok()?;
        } else if section == "DISCOVER-OFFER" {
            if let Some(n) = num(line, "sent packets:") {
                sent = Some(n);
            }
        } else if section == "REQUEST-ACK" {
            if let Some(n) = num(line, "received packets:") {
                acked = n;
            }
        }
    }
    Some(Perf {
        rate,
        sent: sent?,
        acked,
    })
}

/// `Transfer/sec:    859.06MB` (wrk's units are powers of 1024) → MiB/s.
fn parse_wrk_rate(out: &str) -> Option<f64> {
    let v = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Transfer/sec:"))?
        .trim();
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.trim().parse().ok()?;
    let scale = match unit {
        "B" => 1.0 / (1u64 << 20) as f64,
        "KB" => 1.0 / 1024.0,
        "MB" => 1.0,
        "GB" => 1024.0,
        "TB" => 1024.0 * 1024.0,
        _ => return None,
    };
    Some(n * scale)
}

/// A server that did not come up; for the seed, say what that most likely means.
fn startup_error(who: Who, e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    if who == Who::Seed && text.contains("did not start") {
        format!(
            "{text}\n(seed ran but never opened the port: is this service still a stub in this \
             build? Merge the service's branch, then re-run.)"
        )
    } else {
        text
    }
}

/// The server's exit status and log tail when it has died, so a failure says why.
fn exit_hint(server: &mut Child) -> String {
    match server.exited() {
        Some(st) => format!(
            "\n{} had exited ({st}):\n{}",
            server.name,
            indent(&server.log_tail(8))
        ),
        None => String::new(),
    }
}

/// A failure in one progress line: its first line and, when there is more, its last (for a
/// server that died, the last line of its log is usually the cause).
fn first_line(s: &str) -> String {
    let mut lines = s.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("").trim_end_matches("; its output:");
    match lines.next_back() {
        Some(last) => format!("{first} … {last}"),
        None => first.to_string(),
    }
}

/// Build the seed binary (release unless `debug`) and return its path.
fn build_seed(debug: bool) -> Result<PathBuf> {
    let mut cmd = crate::cargo();
    cmd.args(["build", "-p", "seed"]);
    if !debug {
        cmd.arg("--release");
    }
    crate::run(&mut cmd)?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target"));
    let bin = target
        .join(if debug { "debug" } else { "release" })
        .join("seed");
    if !bin.exists() {
        bail!("built seed but {} does not exist", bin.display());
    }
    Ok(bin)
}

/// Root and every tool the chosen protocols need, checked before anything is created.
fn preflight(protos: &[Proto]) -> Result<()> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .context("running id")?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        bail!("the bench creates network namespaces and must run as root");
    }
    let mut tools = vec!["ip", "ss"];
    for p in protos {
        tools.extend_from_slice(match p {
            Proto::Dhcp => &["perfdhcp", "kea-dhcp4"][..],
            Proto::Tftp => &["atftp", "in.tftpd"][..],
            Proto::Http => &["nginx", "wrk", "curl"][..],
        });
    }
    let missing: Vec<&str> = tools.into_iter().filter(|t| !on_path(t)).collect();
    if !missing.is_empty() {
        bail!(
            "missing tools: {} (run `cargo xtask deps`)",
            missing.join(" ")
        );
    }
    if !Path::new("/dev/net/tun").exists() {
        bail!("/dev/net/tun is missing: the delay link needs TAP devices");
    }
    Ok(())
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(tool).is_file())
}

/// The Debian package version of each peer and client used.
fn peer_versions(protos: &[Proto]) -> Vec<String> {
    let mut pkgs = Vec::new();
    for p in protos {
        pkgs.extend_from_slice(match p {
            Proto::Dhcp => &[("kea-dhcp4", "kea-dhcp4-server"), ("perfdhcp", "kea-admin")][..],
            Proto::Tftp => &[("in.tftpd", "tftpd-hpa"), ("atftp", "atftp")][..],
            Proto::Http => &[("nginx", "nginx-light"), ("wrk", "wrk"), ("curl", "curl")][..],
        });
    }
    pkgs.iter()
        .map(|(tool, pkg)| {
            let v = Command::new("dpkg-query")
                .args(["-W", "-f=${Version}", pkg])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_else(|| "unknown version".into());
            format!("{tool} ({pkg} {v})")
        })
        .collect()
}

/// The seed's commit, marked when the worktree has changes.
fn seed_revision() -> String {
    let out = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(crate::root())
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let rev = out(&["rev-parse", "--short", "HEAD"]);
    let dirty = !out(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    format!("commit {rev}{}", if dirty { "+changes" } else { "" })
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERFDHCP: &str = "Running: perfdhcp -4 -l veth-c -r 5000 -p 5 -R 20000 -B
***Rate statistics***
Rate: 4787.91 4-way exchanges/second, expected rate: 5000

***Statistics for: DISCOVER-OFFER***
sent packets: 24999
received packets: 24232
drops: 767
drops ratio: 3.06812 %

***Statistics for: REQUEST-ACK***
sent packets: 24232
received packets: 24028
drops: 204
drops ratio: 0.842 %
";

    #[test]
    fn perfdhcp_output_gives_rate_and_end_to_end_drops() {
        let p = parse_perfdhcp(PERFDHCP).expect("parsed");
        assert_eq!(
            p,
            Perf {
                rate: 4787.91,
                sent: 24999,
                acked: 24028
            }
        );
        // Both exchanges' losses count: 1 - 24028/24999.
        assert!((p.drop_pct() - 3.884).abs() < 0.01, "{}", p.drop_pct());
    }

    #[test]
    fn perfdhcp_without_any_offer_counts_as_all_dropped() {
        let out = "***Rate statistics***\nRate: 0 4-way exchanges/second, expected rate: 10\n\
                   ***Statistics for: DISCOVER-OFFER***\nsent packets: 19\nreceived packets: 0\n";
        let p = parse_perfdhcp(out).expect("parsed");
        assert_eq!(p.acked, 0);
        assert_eq!(p.drop_pct(), 100.0);
        assert!(parse_perfdhcp("perfdhcp: cannot open socket").is_none());
    }

    #[test]
    fn wrk_transfer_rate_in_mib() {
        assert_eq!(
            parse_wrk_rate("Requests/sec: 24.57\nTransfer/sec:    859.06MB\n"),
            Some(859.06)
        );
        assert_eq!(parse_wrk_rate("Transfer/sec:      1.50GB"), Some(1536.0));
        assert_eq!(parse_wrk_rate("Transfer/sec:    512.00KB"), Some(0.5));
        assert_eq!(parse_wrk_rate("Requests/sec: 0.00"), None);
    }

    #[test]
    fn a_failure_summary_keeps_the_cause() {
        let e = "seed dhcp exited during startup (exit status: 1) instead of listening on UDP 67; its output:\n    6 | mode = \"authoritative\"\n    unknown field `mode`, there are no fields\n";
        assert_eq!(
            first_line(e),
            "seed dhcp exited during startup (exit status: 1) instead of listening on UDP 67 … unknown field `mode`, there are no fields"
        );
        assert_eq!(first_line("no answer"), "no answer");
    }

    #[test]
    fn report_rows_compare_against_the_scaled_reference() {
        let mut r = Report::default();
        // The seed's figure of each row; the reference is 100 and the factor 0.9.
        let seed: [Fig; 4] = [
            Ok(95.0),
            Ok(85.0),
            Err("seed exited".into()),
            Err("seed exited".into()),
        ];
        for fig in &seed {
            r.row(
                "m".into(),
                fig,
                "100".into(),
                "t".into(),
                &Ok(100.0),
                0.9,
                mib,
            );
        }
        let met: Vec<&str> = r.rows.iter().map(|x| x.met.as_str()).collect();
        assert_eq!(met, ["yes", "NO", "NO (no figure)", "NO (no figure)"]);
        // The same failure is one note, referenced twice.
        assert_eq!(r.notes, ["seed exited"]);
        assert_eq!(r.rows[2].seed, "FAILED [1]");
        assert_eq!(r.rows[3].seed, "FAILED [1]");
    }
}
