//! `acorn bench`: the load generator behind `bench/fanout.sh` (see BENCHMARKS.md).
//!
//! * `fanout`: N subscribers of one topic and one publisher at a fixed rate
//!   (or several rates, one after the other over the same connections);
//!   measures deliveries/s, loss and publish → receive latency.
//! * `idle`: N idle subscribed connections held open while the server's RSS is
//!   sampled.
//!
//! Both speak either Acorn's protocol or NATS' client protocol over WebSocket,
//! so the same generator drives both servers.
//!
//! Cost model of the generator (it shares the machine with the server): the
//! subscriber connections are spread evenly over a few worker tasks, each of
//! which polls its connections through one `SelectAll` and owns its own
//! histograms (merged once, at the end); per delivery it does one timestamp
//! read per frame, an in-place scan of the message and a histogram record.

mod acorn;
mod nats;
mod stats;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::stream::{SelectAll, StreamExt};
use futures_util::SinkExt;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use stats::{cpu_seconds, machine_busy_seconds, rss_kib, stamp, Progress, WorkerStats, STAMP_LEN};

pub(crate) type Ws = WebSocketStream<TcpStream>;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub cmd: BenchCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// One topic, N subscribers, one publisher at fixed rates: deliveries/s, loss, latency.
    Fanout(FanoutArgs),
    /// N idle subscribed connections, held while the server's RSS is sampled.
    Idle(IdleArgs),
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Acorn,
    Nats,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Acorn => "acorn",
            Target::Nats => "nats",
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct ConnArgs {
    /// Which server protocol to speak.
    #[arg(long, value_enum)]
    pub target: Target,
    /// WebSocket URL: ws://127.0.0.1:PORT[/v1/ws] (Acorn: /v1/ws is the default path).
    #[arg(long)]
    pub url: String,
    /// Acorn: a token allowing publish and subscribe on the cache (wins over --operator-key).
    #[arg(long)]
    pub token: Option<String>,
    /// Acorn: mint a token with this operator key (POST /v1/tokens).
    #[arg(long, env = "ACORN_OPERATOR_KEY", hide_env_values = true)]
    pub operator_key: Option<String>,
    /// Acorn cache.
    #[arg(long, default_value = "bench")]
    pub cache: String,
    /// Topic (Acorn) or subject (NATS).
    #[arg(long, default_value = "fanout")]
    pub topic: String,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Receiving tasks the subscriber connections are spread over.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// The server's process id: its CPU time (fanout) or RSS (idle) goes into the report.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Extra JSON field `label` in the report (e.g. the repeat number).
    #[arg(long)]
    pub label: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Subscriber connections (each subscribes once to the topic).
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Publishes per second; a comma-separated list runs one measurement per rate,
    /// in order, over the same connections.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    pub rate: Vec<f64>,
    /// Seconds of publishing per rate.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds of publishing at the first rate before measuring (not reported).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Bytes per published value (at least 17: send time, sequence, phase).
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// Stop after a rate whose loss exceeds this percentage (higher rates would only lose more).
    #[arg(long, default_value_t = 5.0)]
    pub stop_loss_pct: f64,
    /// Stop after a rate delivered less than this fraction of the offered deliveries/s.
    #[arg(long, default_value_t = 0.8)]
    pub stop_below: f64,
}

#[derive(clap::Args, Debug)]
pub struct IdleArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Idle subscribed connections to open.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Seconds to hold them open (RSS is sampled after `--settle` and again at the end).
    #[arg(long, default_value_t = 20.0)]
    pub hold: f64,
    /// Seconds to wait after the last connection opened before sampling RSS.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let nofile = stats::raise_nofile_limit();
    match args.cmd {
        BenchCmd::Fanout(a) => fanout(a, nofile).await,
        BenchCmd::Idle(a) => idle(a, nofile).await,
    }
}

/// Where to connect: parsed once from `--url`.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub host: String,
    pub port: u16,
    pub uri: String,
}

impl Endpoint {
    fn parse(url: &str, target: Target) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("bad --url {url}"))?;
        if uri.scheme_str() != Some("ws") {
            bail!("--url must be ws://HOST:PORT[/path] (loopback, no TLS): {url}");
        }
        let host = uri
            .host()
            .context("--url has no host")?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            Some(p) if p != "/" => p.to_owned(),
            _ if target == Target::Acorn => "/v1/ws".to_owned(),
            _ => "/".to_owned(),
        };
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        Ok(Self {
            host,
            port,
            uri: format!("ws://{authority}{path}"),
        })
    }
}

/// The generator's own sockets: small buffers (10k of them), eager writes.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

pub(crate) async fn ws_connect(ep: &Endpoint, bearer: Option<&str>) -> anyhow::Result<Ws> {
    let mut req = ep.uri.as_str().into_client_request()?;
    if let Some(token) = bearer {
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}"))?,
        );
    }
    let connect = async {
        let tcp = TcpStream::connect((ep.host.as_str(), ep.port)).await?;
        tcp.set_nodelay(true)?;
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(req, tcp, Some(ws_config())).await?;
        anyhow::Ok(ws)
    };
    tokio::time::timeout(Duration::from_secs(15), connect)
        .await
        .context("WebSocket connect timed out (15 s)")?
        .with_context(|| format!("connecting to {}", ep.uri))
}

/// Protocol-specific details, resolved once.
#[derive(Clone)]
enum Proto {
    Acorn {
        token: String,
        cache: String,
        topic: String,
    },
    Nats {
        subject: String,
    },
}

impl Proto {
    async fn resolve(conn: &ConnArgs, ep: &Endpoint) -> anyhow::Result<Self> {
        Ok(match conn.target {
            Target::Acorn => {
                let token = match (&conn.token, &conn.operator_key) {
                    (Some(t), _) => t.clone(),
                    (None, Some(k)) => acorn::mint_token(ep, k, &conn.cache).await?,
                    (None, None) => bail!("--target acorn needs --token or --operator-key"),
                };
                Proto::Acorn {
                    token,
                    cache: conn.cache.clone(),
                    topic: conn.topic.clone(),
                }
            }
            Target::Nats => Proto::Nats {
                subject: conn.topic.clone(),
            },
        })
    }

    async fn open_subscriber(&self, ep: &Endpoint) -> anyhow::Result<Ws> {
        match self {
            Proto::Acorn {
                token,
                cache,
                topic,
            } => acorn::open_subscriber(ep, token, cache, topic).await,
            Proto::Nats { subject } => nats::open_subscriber(ep, subject).await,
        }
    }

    async fn open_publisher(&self, ep: &Endpoint) -> anyhow::Result<Ws> {
        match self {
            Proto::Acorn { token, .. } => acorn::open_publisher(ep, token).await,
            Proto::Nats { .. } => nats::open_publisher(ep).await,
        }
    }

    fn encode_pub(&self, out: &mut Vec<u8>, value: &[u8]) {
        match self {
            Proto::Acorn { cache, topic, .. } => acorn::encode_pub(out, cache, topic, value),
            Proto::Nats { subject } => nats::encode_pub(out, subject, value),
        }
    }
}

/// Opens `n` subscribers, `concurrency` at a time.
async fn open_subscribers(
    proto: &Proto,
    ep: &Endpoint,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Ws>> {
    let started = Instant::now();
    let mut opened = Vec::with_capacity(n);
    let mut pending = futures_util::stream::iter(0..n)
        .map(|_| proto.open_subscriber(ep))
        .buffer_unordered(concurrency.max(1));
    let mut last_report = Instant::now();
    while let Some(ws) = pending.next().await {
        opened.push(ws.with_context(|| format!("opening subscriber {} of {n}", opened.len() + 1))?);
        if last_report.elapsed() > Duration::from_secs(2) {
            eprintln!(
                "  {} / {n} subscribers ({:.1} s)",
                opened.len(),
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    Ok(opened)
}

/// The running receiving tasks.
struct Workers {
    /// The phase going on (gaps, errors and closes are counted against it).
    clock: Arc<AtomicU8>,
    handles: Vec<tokio::task::JoinHandle<WorkerStats>>,
    stops: Vec<oneshot::Sender<()>>,
    progress: Vec<Arc<Progress>>,
}

impl Workers {
    /// Deliveries seen so far, all workers together.
    fn delivered(&self) -> u64 {
        self.progress.iter().map(|p| p.get()).sum()
    }

    /// Stops every worker and merges what they measured.
    async fn finish(self, phases: usize) -> anyhow::Result<WorkerStats> {
        for s in self.stops {
            let _ = s.send(());
        }
        let mut total = WorkerStats::new(phases);
        for h in self.handles {
            total.merge(&h.await.context("a worker panicked")?);
        }
        Ok(total)
    }
}

/// Spreads the connections over `workers` receiving tasks.
fn spawn_workers(
    conns: Vec<Ws>,
    workers: usize,
    target: Target,
    phases: usize,
    origin: Instant,
) -> Workers {
    let workers = workers.clamp(1, conns.len().max(1));
    let mut groups: Vec<Vec<Ws>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, ws) in conns.into_iter().enumerate() {
        groups[i % workers].push(ws);
    }
    let mut handles = Vec::new();
    let mut stops = Vec::new();
    let mut progress = Vec::new();
    let clock = Arc::new(AtomicU8::new(0));
    for group in groups {
        let (stop_tx, stop_rx) = oneshot::channel();
        let p = Arc::new(Progress::default());
        handles.push(tokio::spawn(worker(
            group,
            target,
            phases,
            origin,
            p.clone(),
            clock.clone(),
            stop_rx,
        )));
        stops.push(stop_tx);
        progress.push(p);
    }
    Workers {
        clock,
        handles,
        stops,
        progress,
    }
}

/// Receives on a group of connections until told to stop.
async fn worker(
    conns: Vec<Ws>,
    target: Target,
    phases: usize,
    origin: Instant,
    progress: Arc<Progress>,
    clock: Arc<AtomicU8>,
    mut stop: oneshot::Receiver<()>,
) -> WorkerStats {
    let mut stats = WorkerStats::new(phases);
    let mut sinks = Vec::with_capacity(conns.len());
    let mut parsers: Vec<nats::NatsParser> = Vec::new();
    let mut closed = vec![false; conns.len()];
    let mut streams = SelectAll::new();
    for (i, ws) in conns.into_iter().enumerate() {
        let (sink, stream) = ws.split();
        sinks.push(sink);
        if target == Target::Nats {
            parsers.push(nats::NatsParser::default());
        }
        // A `None` after the last message: SelectAll drops ended streams silently.
        let end = futures_util::stream::once(std::future::ready((i, None)));
        streams.push(stream.map(move |m| (i, Some(m))).chain(end));
    }
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut stop => break,
            next = streams.next() => next,
        };
        let (i, msg) = match next {
            Some(x) => x,
            None => {
                // Every connection is gone; wait to be collected.
                let _ = (&mut stop).await;
                break;
            }
        };
        stats.now_phase = clock.load(Ordering::Relaxed) as usize;
        let Some(msg) = msg else {
            if !std::mem::replace(&mut closed[i], true) {
                stats.close(|| "the server closed the TCP connection".to_owned());
            }
            continue;
        };
        let data = match msg {
            Ok(Message::Binary(b)) => b,
            Ok(Message::Text(t)) if target == Target::Nats => t.as_bytes().to_vec().into(),
            Ok(Message::Text(_)) => {
                stats.error(|| "server sent a text frame".to_owned());
                continue;
            }
            Ok(Message::Close(frame)) => {
                if !std::mem::replace(&mut closed[i], true) {
                    stats.close(|| format!("closed by the server: {frame:?}"));
                }
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                if !std::mem::replace(&mut closed[i], true) {
                    stats.close(|| format!("connection failed: {e}"));
                }
                continue;
            }
        };
        let now_ns = origin.elapsed().as_nanos() as u64;
        match target {
            Target::Acorn => progress.add(acorn::feed(&data, now_ns, &mut stats)),
            Target::Nats => {
                let st = &mut stats;
                let mut on_err_msg = None;
                let ev = parsers[i].feed(&data, &mut |v| st.record(v, now_ns), &mut |line| {
                    on_err_msg = Some(String::from_utf8_lossy(line).into_owned())
                });
                if let Some(m) = on_err_msg {
                    stats.error(|| m);
                }
                progress.add(ev.msgs);
                if ev.pings > 0 {
                    let _ = sinks[i]
                        .send(Message::Binary(nats::PONG.to_vec().into()))
                        .await;
                }
            }
        }
    }
    stats
}

/// One measured (or warm-up) stretch of publishing.
struct PhaseCmd {
    phase: u8,
    rate: f64,
    duration: Duration,
    reply: oneshot::Sender<anyhow::Result<Published>>,
}

struct Published {
    count: u64,
    elapsed: Duration,
    /// Messages the server sent back to the publisher meanwhile (Acorn: `err`s,
    /// e.g. rate_limited; NATS: -ERR lines).
    errors: u64,
    first_error: Option<String>,
}

/// The publisher task: runs phases on command and answers the server meanwhile.
async fn publisher(
    mut ws: Ws,
    proto: Proto,
    value_size: usize,
    origin: Instant,
    mut cmds: mpsc::Receiver<PhaseCmd>,
) -> anyhow::Result<()> {
    let mut seq = 0u64;
    let mut value = vec![0u8; value_size];
    let mut frame = Vec::with_capacity(16 * 1024);
    let mut incoming = Incoming::default();
    loop {
        let cmd = tokio::select! {
            cmd = cmds.recv() => match cmd { Some(c) => c, None => return Ok(()) },
            msg = ws.next() => { incoming.handle(&mut ws, msg, &proto).await?; continue; }
        };
        let (errors_before, start) = (incoming.errors, Instant::now());
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let result = loop {
            tokio::select! {
                _ = tick.tick() => {
                    let elapsed = start.elapsed().min(cmd.duration);
                    let due = (elapsed.as_secs_f64() * cmd.rate) as u64;
                    while sent < due {
                        // At most 256 publishes per frame.
                        let n = (due - sent).min(256);
                        frame.clear();
                        for _ in 0..n {
                            seq += 1;
                            stamp(&mut value, origin, seq, cmd.phase);
                            proto.encode_pub(&mut frame, &value);
                        }
                        if let Err(e) = ws.send(Message::Binary(frame.clone().into())).await {
                            return Err(e).context("publishing");
                        }
                        sent += n;
                    }
                    if elapsed >= cmd.duration {
                        break Published {
                            count: sent,
                            elapsed: start.elapsed(),
                            errors: incoming.errors - errors_before,
                            first_error: incoming.first_error.clone(),
                        };
                    }
                }
                msg = ws.next() => incoming.handle(&mut ws, msg, &proto).await?,
            }
        };
        let _ = cmd.reply.send(Ok(result));
    }
}

#[derive(Default)]
struct Incoming {
    errors: u64,
    first_error: Option<String>,
    nats: nats::NatsParser,
}

impl Incoming {
    async fn handle(
        &mut self,
        ws: &mut Ws,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
        proto: &Proto,
    ) -> anyhow::Result<()> {
        let data = match msg {
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Text(t))) => t.as_bytes().to_vec().into(),
            Some(Ok(Message::Close(f))) => bail!("the server closed the publisher: {f:?}"),
            Some(Ok(_)) => return Ok(()),
            Some(Err(e)) => return Err(e).context("publisher connection"),
            None => bail!("the server closed the publisher"),
        };
        match proto {
            Proto::Acorn { .. } => {
                let mut st = WorkerStats::new(0);
                acorn::feed(&data, 0, &mut st);
                if st.errors > 0 {
                    self.errors += st.errors;
                    if self.first_error.is_none() {
                        self.first_error = st.first_error;
                    }
                }
            }
            Proto::Nats { .. } => {
                let mut errs = Vec::new();
                let ev = self.nats.feed(&data, &mut |_| {}, &mut |l| {
                    errs.push(String::from_utf8_lossy(l).into_owned())
                });
                self.errors += errs.len() as u64;
                if self.first_error.is_none() {
                    self.first_error = errs.into_iter().next();
                }
                if ev.pings > 0 {
                    ws.send(Message::Binary(nats::PONG.to_vec().into())).await?;
                }
            }
        }
        Ok(())
    }
}

fn us(ns: u64) -> f64 {
    (ns as f64 / 1000.0 * 10.0).round() / 10.0
}

/// What the coordinator learned about one phase besides the workers' counts.
struct PhaseRun {
    rate: f64,
    published: Published,
    server_cpu_s: Option<f64>,
    generator_cpu_s: Option<f64>,
    other_cpu_s: Option<f64>,
    drain: Duration,
}

async fn fanout(a: FanoutArgs, nofile: u64) -> anyhow::Result<()> {
    let conn = &a.conn;
    if a.value_size < STAMP_LEN {
        bail!("--value-size must be at least {STAMP_LEN}");
    }
    if a.rate.is_empty() || a.rate.iter().any(|r| !r.is_finite() || *r <= 0.0) || a.rate.len() > 200
    {
        bail!("--rate must be 1 to 200 positive numbers");
    }
    if !(a.duration > 0.0 && a.duration <= 3600.0 && (0.0..=600.0).contains(&a.warmup)) {
        bail!("--duration must be in (0, 3600] and --warmup in [0, 600] seconds");
    }
    if a.subscribers + 64 > nofile as usize {
        eprintln!(
            "warning: open-files limit {nofile} is below {} subscribers",
            a.subscribers
        );
    }
    let ep = Endpoint::parse(&conn.url, conn.target)?;
    let proto = Proto::resolve(conn, &ep).await?;
    let server_pid = conn.server_pid.map(|p| p.to_string());
    let origin = Instant::now();

    eprintln!(
        "fanout {}: opening {} subscribers at {} ({} at a time)",
        conn.target.name(),
        a.subscribers,
        ep.uri,
        conn.connect_concurrency
    );
    let t = Instant::now();
    let subs = open_subscribers(&proto, &ep, a.subscribers, conn.connect_concurrency).await?;
    let connect_s = t.elapsed().as_secs_f64();
    let pub_ws = proto
        .open_publisher(&ep)
        .await
        .context("opening the publisher")?;

    // Phase 0 is the warm-up, phases 1.. the rates.
    let phases = a.rate.len() + 1;
    let workers = spawn_workers(subs, conn.workers, conn.target, phases, origin);
    let (cmd_tx, cmd_rx) = mpsc::channel(1);
    let pub_task = tokio::spawn(publisher(
        pub_ws,
        proto.clone(),
        a.value_size,
        origin,
        cmd_rx,
    ));
    let delivered = || workers.delivered();

    let mut expected_total = 0u64;
    let mut runs: Vec<PhaseRun> = Vec::new();
    let schedule: Vec<(u8, f64, f64)> = std::iter::once((0u8, a.rate[0], a.warmup))
        .filter(|p| p.2 > 0.0)
        .chain(
            a.rate
                .iter()
                .enumerate()
                .map(|(i, &r)| ((i + 1) as u8, r, a.duration)),
        )
        .collect();
    let mut phase_error = None;
    for (phase, rate, secs) in schedule {
        let cpu0 = server_pid.as_deref().and_then(cpu_seconds);
        let gen0 = cpu_seconds("self");
        let busy0 = machine_busy_seconds();
        workers.clock.store(phase, Ordering::Relaxed);
        let before = delivered();
        let (reply_tx, reply_rx) = oneshot::channel();
        let cmd = PhaseCmd {
            phase,
            rate,
            duration: Duration::from_secs_f64(secs),
            reply: reply_tx,
        };
        if cmd_tx.send(cmd).await.is_err() {
            phase_error = Some("the publisher stopped".to_owned());
            break;
        }
        let published = match reply_rx.await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                phase_error = Some(format!("{e:#}"));
                break;
            }
            Err(_) => {
                phase_error = Some(match pub_task.is_finished() {
                    true => "the publisher failed (see below)".to_owned(),
                    false => "the publisher stopped".to_owned(),
                });
                break;
            }
        };
        // Drain: wait until every expected delivery arrived, or nothing moved for
        // 2 s (15 s at most). `drain` ends at the last delivery seen.
        expected_total += published.count * a.subscribers as u64;
        let drain_start = Instant::now();
        let (mut last, mut last_change) = (delivered(), Instant::now());
        while delivered() < expected_total
            && last_change.elapsed() < Duration::from_secs(2)
            && drain_start.elapsed() < Duration::from_secs(15)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = delivered();
            if now != last {
                (last, last_change) = (now, Instant::now());
            }
        }
        last = delivered();
        let drain = last_change.saturating_duration_since(drain_start);
        let server_cpu_s = match (cpu0, server_pid.as_deref().and_then(cpu_seconds)) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let generator_cpu_s = match (gen0, cpu_seconds("self")) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        // CPU the rest of the machine used meanwhile (other builds, tests...).
        let other_cpu_s = match (busy0, machine_busy_seconds(), generator_cpu_s) {
            (Some(a), Some(b), Some(g)) => Some((b - a - g - server_cpu_s.unwrap_or(0.0)).max(0.0)),
            _ => None,
        };
        if phase == 0 {
            continue;
        }
        let loss = 1.0 - last as f64 / expected_total.max(1) as f64;
        let window = published.elapsed.as_secs_f64() + drain.as_secs_f64();
        let kept_up = (last - before) as f64 / window / (rate * a.subscribers as f64);
        runs.push(PhaseRun {
            rate,
            published,
            server_cpu_s,
            generator_cpu_s,
            other_cpu_s,
            drain,
        });
        if loss * 100.0 > a.stop_loss_pct {
            eprintln!(
                "  stopping: {:.1}% of deliveries missing so far",
                loss * 100.0
            );
            break;
        }
        if kept_up < a.stop_below {
            eprintln!(
                "  stopping: delivered {:.0}% of the offered rate",
                kept_up * 100.0
            );
            break;
        }
    }
    drop(cmd_tx);
    let total = workers.finish(phases).await?;
    let pub_result = tokio::time::timeout(Duration::from_secs(5), pub_task).await;
    if let Ok(Ok(Err(e))) = pub_result {
        phase_error.get_or_insert_with(|| format!("{e:#}"));
    }

    for (k, run) in runs.iter().enumerate() {
        let st = &total.phases[k + 1];
        let ev = total.events[k + 1];
        let h = &st.latency_ns;
        let expected = run.published.count * a.subscribers as u64;
        let secs = run.published.elapsed.as_secs_f64();
        // Over the publishing time plus the time the last deliveries took to arrive.
        let dps = st.deliveries as f64 / (secs + run.drain.as_secs_f64());
        let loss_pct = 100.0 * (expected as f64 - st.deliveries as f64) / expected.max(1) as f64;
        let per_cpu = run
            .server_cpu_s
            .filter(|c| *c > 0.0)
            .map(|c| (st.deliveries as f64 / c).round());
        let report = json!({
            "bench": "fanout",
            "target": conn.target.name(),
            "label": conn.label,
            "subscribers": a.subscribers,
            "rate": run.rate,
            "duration_s": (secs * 1000.0).round() / 1000.0,
            "value_size": a.value_size,
            "published": run.published.count,
            "deliveries": st.deliveries,
            "expected_deliveries": expected,
            "loss_pct": (loss_pct * 1000.0).round() / 1000.0,
            "deliveries_per_sec": dps.round(),
            "p50_us": us(h.value_at_quantile(0.50)),
            "p90_us": us(h.value_at_quantile(0.90)),
            "p99_us": us(h.value_at_quantile(0.99)),
            "p999_us": us(h.value_at_quantile(0.999)),
            "max_us": us(h.max()),
            "mean_us": us(h.mean() as u64),
            "server_cpu_s": run.server_cpu_s,
            "deliveries_per_server_cpu_s": per_cpu,
            "generator_cpu_s": run.generator_cpu_s,
            "other_cpu_s": run.other_cpu_s,
            "drain_s": (run.drain.as_secs_f64() * 1000.0).round() / 1000.0,
            "publisher_errors": run.published.errors,
            "publisher_first_error": run.published.first_error,
            "gaps": ev.gaps,
            "gap_missed": ev.gap_missed,
            "errors": ev.errors,
            "closed": ev.closed,
            "run_gaps": total.gaps,
            "run_errors": total.errors,
            "run_closed": total.closed,
            "first_error": total.first_error,
            "first_close": total.first_close,
            "malformed": total.malformed,
            "connect_s": (connect_s * 1000.0).round() / 1000.0,
            "workers": conn.workers,
        });
        println!("{report}");
        eprintln!(
            "{:>5} {:>6} subs {:>8.0} pub/s: {:>10.0} deliveries/s, loss {:.3}%, p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us, server {} deliveries/CPU-s",
            conn.target.name(),
            a.subscribers,
            run.rate,
            dps,
            loss_pct,
            us(h.value_at_quantile(0.5)),
            us(h.value_at_quantile(0.99)),
            us(h.value_at_quantile(0.999)),
            us(h.max()),
            per_cpu.map(|v| format!("{v:.0}")).unwrap_or_else(|| "?".into()),
        );
    }
    if total.closed > 0 || total.errors > 0 || total.gaps > 0 {
        eprintln!(
            "  note: {} connections closed ({}), {} errors ({}), {} gaps ({} items missed)",
            total.closed,
            total.first_close.as_deref().unwrap_or("-"),
            total.errors,
            total.first_error.as_deref().unwrap_or("-"),
            total.gaps,
            total.gap_missed
        );
    }
    match phase_error {
        Some(e) => bail!("fan-out run stopped early: {e}"),
        None => Ok(()),
    }
}

async fn idle(a: IdleArgs, nofile: u64) -> anyhow::Result<()> {
    let conn = &a.conn;
    if !(0.0..=3600.0).contains(&a.hold) || !(0.0..=600.0).contains(&a.settle) {
        bail!("--hold must be in [0, 3600] and --settle in [0, 600] seconds");
    }
    if a.connections + 64 > nofile as usize {
        eprintln!(
            "warning: open-files limit {nofile} is below {} connections",
            a.connections
        );
    }
    let ep = Endpoint::parse(&conn.url, conn.target)?;
    let proto = Proto::resolve(conn, &ep).await?;
    let pid = conn.server_pid.map(|p| p.to_string());
    let rss = || pid.as_deref().and_then(rss_kib);
    let origin = Instant::now();

    let rss_before = rss();
    eprintln!(
        "idle {}: opening {} subscribed connections at {}",
        conn.target.name(),
        a.connections,
        ep.uri
    );
    let t = Instant::now();
    let conns = open_subscribers(&proto, &ep, a.connections, conn.connect_concurrency).await?;
    let connect_s = t.elapsed().as_secs_f64();
    let n = conns.len();
    let workers = spawn_workers(conns, conn.workers, conn.target, 1, origin);
    tokio::time::sleep(Duration::from_secs_f64(a.settle.min(a.hold))).await;
    let rss_settled = rss();
    eprintln!("  ready: {n} connections open; holding {:.0} s", a.hold);
    tokio::time::sleep(Duration::from_secs_f64((a.hold - a.settle).max(0.0))).await;
    let rss_end = rss();
    let total = workers.finish(1).await?;
    let per = |after: Option<u64>| match (rss_before, after) {
        (Some(b), Some(a)) if n > 0 => {
            Some(((a as f64 - b as f64) / n as f64 * 100.0).round() / 100.0)
        }
        _ => None,
    };
    let report = json!({
        "bench": "idle",
        "target": conn.target.name(),
        "label": conn.label,
        "connections": n,
        "connect_s": (connect_s * 1000.0).round() / 1000.0,
        "hold_s": a.hold,
        "rss_before_kib": rss_before,
        "rss_settled_kib": rss_settled,
        "rss_end_kib": rss_end,
        "kib_per_conn_settled": per(rss_settled),
        "kib_per_conn_end": per(rss_end),
        "closed": total.closed,
        "first_close": total.first_close,
        "errors": total.errors,
    });
    println!("{report}");
    eprintln!(
        "{:>5} idle {n} connections: RSS {} -> {} KiB (settled), {} KiB at the end: {} KiB/connection",
        conn.target.name(),
        rss_before.map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
        rss_settled.map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
        rss_end.map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
        per(rss_end).or(per(rss_settled)).map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
    );
    if total.closed > 0 {
        bail!(
            "{} connections closed during the hold: {}",
            total.closed,
            total.first_close.unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_defaults_the_acorn_path() {
        let e = Endpoint::parse("ws://127.0.0.1:9000", Target::Acorn).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.uri.as_str()),
            ("127.0.0.1", 9000, "ws://127.0.0.1:9000/v1/ws")
        );
        let e = Endpoint::parse("ws://127.0.0.1:9000/", Target::Nats).unwrap();
        assert_eq!(e.uri, "ws://127.0.0.1:9000/");
        let e = Endpoint::parse("ws://localhost:9/v1/ws?x=1", Target::Acorn).unwrap();
        assert_eq!(e.uri, "ws://localhost:9/v1/ws?x=1");
        assert!(Endpoint::parse("wss://127.0.0.1:9", Target::Acorn).is_err());
    }
}
