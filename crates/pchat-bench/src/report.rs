//! Results: a list of figure objects per run in `<out>/<date>-<scenario>-<backend>.json`, a summary table appended
//! to `RESULTS.md`, and for runs that vary the load an SVG plot of latency percentiles against it.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::hist::Histogram;

/// One measured figure, with its target when the issue sets one.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figure {
    pub(crate) scenario: String,
    pub(crate) backend: String,
    pub(crate) metric: String,
    pub(crate) value: f64,
    pub(crate) unit: String,
    pub(crate) target: Option<String>,
    pub(crate) met: Option<bool>,
}

/// Latency percentiles at one load, for the plot.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Point {
    pub(crate) load: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// What one scenario run found.
pub(crate) struct Run {
    pub(crate) scenario: String,
    pub(crate) backend: String,
    pub(crate) figures: Vec<Figure>,
    pub(crate) notes: Vec<String>,
    /// (what the load is, what the latency is, points) for the plot.
    pub(crate) curve: Option<(String, String, Vec<Point>)>,
}

impl Run {
    pub(crate) fn new(scenario: &str, backend: &str) -> Self {
        Self { scenario: scenario.to_owned(), backend: backend.to_owned(), figures: vec![], notes: vec![], curve: None }
    }

    fn push(&mut self, metric: &str, value: f64, unit: &str, target: Option<String>, met: Option<bool>) {
        println!(
            "  {metric}: {value:.3} {unit}{}",
            match (&target, met) {
                (Some(t), Some(m)) => format!("  (target {t}: {})", if m { "met" } else { "NOT MET" }),
                _ => String::new(),
            }
        );
        self.figures.push(Figure {
            scenario: self.scenario.clone(),
            backend: self.backend.clone(),
            metric: metric.to_owned(),
            value: if value.is_finite() { value } else { -1.0 },
            unit: unit.to_owned(),
            target,
            met,
        });
    }

    pub(crate) fn figure(&mut self, metric: &str, value: f64, unit: &str) {
        self.push(metric, value, unit, None, None);
    }

    /// A figure that must stay below `limit`.
    pub(crate) fn at_most(&mut self, metric: &str, value: f64, unit: &str, limit: f64) {
        self.push(metric, value, unit, Some(format!("<= {limit} {unit}")), Some(value.is_finite() && value <= limit));
    }

    /// A figure that must reach `floor`.
    pub(crate) fn at_least(&mut self, metric: &str, value: f64, unit: &str, floor: f64) {
        self.push(metric, value, unit, Some(format!(">= {floor} {unit}")), Some(value.is_finite() && value >= floor));
    }

    /// p50/p90/p99/max of a distribution (ms); the target, if any, on p99.
    pub(crate) fn latency(&mut self, metric: &str, h: &Histogram, p99_limit: Option<f64>) {
        self.figure(&format!("{metric} p50"), h.percentile_ms(50.0), "ms");
        self.figure(&format!("{metric} p90"), h.percentile_ms(90.0), "ms");
        match p99_limit {
            Some(limit) => self.at_most(&format!("{metric} p99"), h.percentile_ms(99.0), "ms", limit),
            None => self.figure(&format!("{metric} p99"), h.percentile_ms(99.0), "ms"),
        }
        self.figure(&format!("{metric} max"), h.percentile_ms(100.0), "ms");
        self.figure(&format!("{metric} samples"), h.count() as f64, "count");
    }

    /// Where a phase's CPU went, per unit of work done (`count` of `what`, e.g. durable posts): the watched
    /// servers' CPU and everything else's (the load generator, and the database when it runs here), and the rate
    /// at which everything else alone would fill every core. When the machine was busy on every core, that rate
    /// bounds what any server could show on this machine with this load generator beside it.
    pub(crate) fn cpu_split(&mut self, phase: &str, what: &str, used: &crate::target::Used, count: u64) {
        let cores = crate::target::cores() as f64;
        self.figure(
            &format!("machine CPU {phase} (every process; {:.0} % = every core)", cores * 100.0),
            used.machine_cpu_percent,
            "%",
        );
        if let Some(stall) = used.io_stall_percent {
            self.figure(&format!("time some task waited for storage {phase} (/proc/pressure/io)"), stall, "%");
        }
        if count == 0 {
            return;
        }
        let per = |percent: f64| percent.max(0.0) / 100.0 * used.wall_secs / count as f64 * 1e6;
        let others = per(used.machine_cpu_percent - used.cpu_percent);
        self.figure(&format!("server CPU per {what} {phase}"), per(used.cpu_percent), "µs");
        self.figure(&format!("CPU of the other processes per {what} {phase} (load generator, database)"), others, "µs");
        if others > 0.0 {
            self.figure(
                &format!("{what}s per second the other processes alone would fill every core with"),
                cores * 1e6 / others,
                "1/s",
            );
        }
    }

    pub(crate) fn note(&mut self, text: String) {
        println!("  note: {text}");
        self.notes.push(text);
    }

    /// Whether every figure with a target met it.
    pub(crate) fn all_met(&self) -> bool {
        self.figures.iter().all(|f| f.met != Some(false))
    }

    /// Writes the JSON (and the plot) into `out`, and appends the table to `markdown` when given.
    pub(crate) fn save(
        &self,
        out: &Path,
        markdown: Option<&Path>,
        machine: &str,
        command: &str,
    ) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(out)?;
        let stamp = now_stamp();
        let base = format!("{}-{}-{}", &stamp[..10], self.scenario, self.backend);
        let json_path = out.join(format!("{base}.json"));
        std::fs::write(&json_path, serde_json::to_string_pretty(&self.figures)?)?;
        let plot = match &self.curve {
            Some((x, y, points)) if points.len() >= 2 => {
                let path = out.join(format!("{base}.svg"));
                std::fs::write(&path, svg(&format!("{} ({})", self.scenario, self.backend), x, y, points))?;
                Some(path)
            }
            _ => None,
        };
        if let Some(md) = markdown {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(md)?;
            writeln!(f, "\n## {stamp} — `{}` on {} — {machine}\n", self.scenario, self.backend)?;
            writeln!(f, "`{command}`\n")?;
            writeln!(f, "| metric | value | unit | target | met |\n|---|---:|---|---|---|")?;
            for fig in &self.figures {
                let met = match fig.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "",
                };
                writeln!(
                    f,
                    "| {} | {} | {} | {} | {met} |",
                    fig.metric,
                    pretty(fig.value),
                    fig.unit,
                    fig.target.as_deref().unwrap_or("")
                )?;
            }
            for n in &self.notes {
                writeln!(f, "\n- {n}")?;
            }
            let rel = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            writeln!(f, "\nFigures: `results/{}`", rel(&json_path))?;
            if let Some(p) = &plot {
                writeln!(f, "\n![latency against load](results/{})", rel(p))?;
            }
        }
        Ok(json_path)
    }
}

fn pretty(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `YYYY-MM-DD HH:MM UTC` now.
pub(crate) fn now_stamp() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "0000-00-00 00:00 UTC".into())
}

/// A line chart of p50/p90/p99 against load (log-scaled latency), self-contained SVG.
fn svg(title: &str, x_label: &str, y_label: &str, points: &[Point]) -> String {
    let (w, h, left, right, top, bottom) = (720.0, 420.0, 70.0, 20.0, 40.0, 50.0);
    let xs: Vec<f64> = points.iter().map(|p| p.load).collect();
    let (x0, x1) = (xs.iter().cloned().fold(f64::INFINITY, f64::min), xs.iter().cloned().fold(0.0, f64::max));
    let ys: Vec<f64> = points.iter().flat_map(|p| [p.p50, p.p90, p.p99]).filter(|v| *v > 0.0).collect();
    let y0 = ys.iter().cloned().fold(f64::INFINITY, f64::min).max(0.01).log10().floor();
    let y1 = ys.iter().cloned().fold(0.0, f64::max).max(0.02).log10().ceil().max(y0 + 1.0);
    let px = |x: f64| left + (x - x0) / (x1 - x0).max(1e-9) * (w - left - right);
    let py = |y: f64| top + (1.0 - (y.max(1e-3).log10() - y0) / (y1 - y0)) * (h - top - bottom);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{title}</text>\n",
        w / 2.0
    );
    let mut decade = y0;
    while decade <= y1 {
        let y = py(10f64.powf(decade));
        s += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            w - right,
            left - 6.0,
            y + 4.0,
            pretty(10f64.powf(decade))
        );
        decade += 1.0;
    }
    for x in &xs {
        s += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            px(*x),
            h - bottom + 18.0,
            pretty(*x)
        );
    }
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{x_label}</text>\n<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">{y_label} (ms, log)</text>\n",
        (left + w - right) / 2.0,
        h - 10.0,
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0
    );
    for (name, colour, get) in [
        ("p50", "#1b7837", (|p: &Point| p.p50) as fn(&Point) -> f64),
        ("p90", "#2166ac", |p: &Point| p.p90),
        ("p99", "#b2182b", |p: &Point| p.p99),
    ] {
        let path: Vec<String> = points.iter().map(|p| format!("{:.1},{:.1}", px(p.load), py(get(p)))).collect();
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
            path.join(" ")
        );
        if let Some(last) = points.last() {
            s += &format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{name}</text>\n",
                (px(last.load) - 30.0).max(left),
                py(get(last)) - 6.0
            );
        }
    }
    s + "</svg>\n"
}
