//! Logs to stderr through `tracing`, at the configured level, as text or JSON (`-log-json`), and
//! to any `/v1/agent/monitor` stream at the level that stream asked for. The level of either can
//! change at runtime (`/v1/agent/reload`, a monitor connecting or leaving).
//!
//! The monitor layer has its own filter, reloaded to the most verbose level any monitor wants and
//! to `off` when none is connected, so an agent nobody monitors formats nothing extra (tracing
//! caches callsite interest; a reload rebuilds that cache).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter};

/// Sets a layer's filter (a `reload::Handle`, whose type names the whole subscriber stack).
type SetFilter = Box<dyn Fn(EnvFilter) + Send + Sync>;

static STDERR_FILTER: OnceLock<SetFilter> = OnceLock::new();
static MONITORS: OnceLock<Monitors> = OnceLock::new();

/// Lines buffered for slow monitor readers; a reader further behind loses the oldest, as Consul's
/// monitor drops logs rather than slowing the agent.
const MONITOR_BUFFER: usize = 512;

/// Consul's level names to tracing's; `None` for a name Consul does not know.
pub fn parse_level(level: &str) -> Option<Level> {
    match level.to_ascii_lowercase().as_str() {
        "trace" => Some(Level::TRACE),
        "debug" => Some(Level::DEBUG),
        "" | "info" => Some(Level::INFO),
        "warn" => Some(Level::WARN),
        "err" | "error" => Some(Level::ERROR),
        _ => None,
    }
}

fn directive(level: Level) -> String {
    let l = level.as_str().to_ascii_lowercase();
    // openraft and hickory (a line per DNS request) are chatty at debug: keep them quieter unless
    // tracing everything.
    if level == Level::TRACE {
        l
    } else {
        format!("{l},openraft=warn,hickory_server=warn,hickory_net=warn")
    }
}

fn directive_for(level: &str) -> String {
    directive(parse_level(level).unwrap_or(Level::INFO))
}

/// Installs the global subscriber once; later calls only change the stderr level.
pub fn init(level: &str, json: bool) {
    if let Some(set) = STDERR_FILTER.get() {
        set(EnvFilter::new(directive_for(level)));
        return;
    }
    let (filter, handle) = reload::Layer::new(EnvFilter::new(directive_for(level)));
    let (mon_filter, mon_handle) = reload::Layer::new(EnvFilter::new("off"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(true);
    let monitor = MonitorLayer.with_filter(mon_filter);
    let res = if json {
        tracing_subscriber::registry().with(monitor).with(fmt.json().with_filter(filter)).try_init()
    } else {
        tracing_subscriber::registry().with(monitor).with(fmt.with_filter(filter)).try_init()
    };
    if res.is_ok() {
        let _ = STDERR_FILTER.set(Box::new(move |f| {
            let _ = handle.modify(|x| *x = f);
        }));
        let (tx, _) = broadcast::channel(MONITOR_BUFFER);
        let filter: SetFilter = Box::new(move |f| {
            let _ = mon_handle.modify(|x| *x = f);
        });
        let _ = MONITORS.set(Monitors { tx, levels: Mutex::default(), next: AtomicU64::new(0), filter });
    }
}

/// One log line as a monitor sees it, in both of Consul's formats.
#[derive(Debug)]
pub struct LogLine {
    pub level: Level,
    pub text: String,
    pub json: String,
}

struct Monitors {
    tx: broadcast::Sender<Arc<LogLine>>,
    levels: Mutex<HashMap<u64, Level>>,
    next: AtomicU64,
    filter: SetFilter,
}

impl Monitors {
    fn refilter(&self, levels: &HashMap<u64, Level>) {
        // Level's ordering: TRACE is the "largest" (most verbose).
        let d = levels.values().max().map(|l| directive(*l)).unwrap_or_else(|| "off".into());
        (self.filter)(EnvFilter::new(d));
    }
}

/// A connected monitor: receives every line at or above its level until dropped.
pub struct Monitor {
    id: u64,
    level: Level,
    rx: broadcast::Receiver<Arc<LogLine>>,
}

impl Monitor {
    /// Subscribes at `level`; `None` when logging was never initialised (then there is nothing to see).
    pub fn subscribe(level: Level) -> Option<Monitor> {
        let m = MONITORS.get()?;
        let id = m.next.fetch_add(1, Ordering::Relaxed);
        let rx = m.tx.subscribe();
        let mut levels = m.levels.lock().expect("monitor levels");
        levels.insert(id, level);
        m.refilter(&levels);
        Some(Monitor { id, level, rx })
    }

    /// The next line at this monitor's level; `Err(n)` when `n` lines were dropped because the
    /// reader fell behind.
    pub async fn next(&mut self) -> Result<Arc<LogLine>, u64> {
        loop {
            match self.rx.recv().await {
                Ok(l) if l.level <= self.level => return Ok(l),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => return Err(n),
                // The sender lives in a static: it never closes.
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(m) = MONITORS.get() {
            let mut levels = m.levels.lock().expect("monitor levels");
            levels.remove(&self.id);
            m.refilter(&levels);
        }
    }
}

struct MonitorLayer;

impl<S: Subscriber> Layer<S> for MonitorLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some(m) = MONITORS.get() else { return };
        if m.tx.receiver_count() == 0 {
            return;
        }
        let meta = event.metadata();
        let mut v = Fields::default();
        event.record(&mut v);
        let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        // hclog's shape, which Consul's monitor prints: `<ts> [INFO]  <module>: <msg>: k=v`.
        let bracket = match *meta.level() {
            Level::TRACE => "[TRACE]",
            Level::DEBUG => "[DEBUG]",
            Level::INFO => "[INFO] ",
            Level::WARN => "[WARN] ",
            Level::ERROR => "[ERROR]",
        };
        let mut text = format!("{ts} {bracket} {}: {}", meta.target(), v.message);
        for (i, (k, val)) in v.fields.iter().enumerate() {
            let _ = write!(text, "{}{k}={val}", if i == 0 { ": " } else { " " });
        }
        // hclog's JSON is a Go map: keys come out sorted.
        let mut obj: std::collections::BTreeMap<String, String> = v.fields.into_iter().collect();
        obj.insert("@level".into(), meta.level().as_str().to_ascii_lowercase());
        obj.insert("@message".into(), v.message);
        obj.insert("@module".into(), meta.target().into());
        obj.insert("@timestamp".into(), ts);
        let json = serde_json::to_string(&obj).unwrap_or_default();
        let _ = m.tx.send(Arc::new(LogLine { level: *meta.level(), text, json }));
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.push((field.name().to_string(), value.to_string()));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields.push((field.name().to_string(), format!("{value:?}")));
        }
    }
}
