//! The chart for docs/benchmarks.md, drawn from `bench/compare --out` JSON: for each workload,
//! the median ratio Corral/ZooKeeper of throughput, standalone and 3-member, on a log scale,
//! with the 1x line (parity) and the 3x line (the write target), as SVG.

use serde_json::Value;

/// One bar: a workload, a setup (standalone or 3-member), and its median ratio.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub workload: String,
    pub setup: String,
    pub ratio: f64,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// The median throughput ratio of every workload of every setup in the results.
pub fn throughput_bars(results: &Value) -> Vec<Bar> {
    let mut bars = Vec::new();
    for setup in ["standalone", "3-member"] {
        let Some(table) = results.get(setup).and_then(Value::as_object) else {
            continue;
        };
        for (workload, by) in table {
            let runs = |kind: &str| -> Vec<f64> {
                by.get(kind)
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|r| r["ops_per_sec"].as_f64()).collect())
                    .unwrap_or_default()
            };
            let ratios: Vec<f64> = runs("corral")
                .iter()
                .zip(runs("zookeeper"))
                .filter(|(_, z)| *z > 0.0)
                .map(|(c, z)| c / z)
                .collect();
            if let Some(ratio) = median(ratios) {
                bars.push(Bar {
                    workload: workload.clone(),
                    setup: setup.into(),
                    ratio,
                });
            }
        }
    }
    bars
}

/// Draws the bars as an SVG document: grouped bars per workload on a log scale from 0.25x to
/// the largest ratio, with gridlines at each power of two and the 1x and 3x lines marked.
/// (Written out by hand: the chart is simple, and this keeps font libraries out of the build.)
pub fn throughput_svg(bars: &[Bar]) -> Result<String, String> {
    let mut workloads: Vec<&str> = Vec::new();
    for b in bars {
        if !workloads.contains(&b.workload.as_str()) {
            workloads.push(&b.workload);
        }
    }
    if workloads.is_empty() {
        return Err("no throughput results to plot".into());
    }
    let (width, height) = (900.0, 480.0);
    let (left, right, top, bottom) = (70.0, 150.0, 50.0, 60.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let lo = 0.25f64.log2();
    let hi = bars
        .iter()
        .map(|b| b.ratio)
        .fold(4.0f64, f64::max)
        .log2()
        .ceil();
    let y = |ratio: f64| top + plot_h * (1.0 - (ratio.max(0.25).log2() - lo) / (hi - lo));
    let slot = plot_w / workloads.len() as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"13\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"28\" font-size=\"18\" text-anchor=\"middle\">Throughput, Corral / Apache ZooKeeper 3.8 (median of rounds)</text>\n",
        left + plot_w / 2.0
    );
    let mut level = lo;
    while level <= hi {
        let r = level.exp2();
        let style = if r == 1.0 {
            "stroke=\"black\" stroke-width=\"1.5\""
        } else {
            "stroke=\"#ddd\""
        };
        svg += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" {style}/>\n\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}x</text>\n",
            left + plot_w,
            left - 8.0,
            y(r) + 4.0,
            if r < 1.0 {
                format!("{r}")
            } else {
                format!("{r:.0}")
            },
            y0 = y(r)
        );
        level += 1.0;
    }
    let target = y(3.0);
    svg += &format!(
        "<line x1=\"{left}\" x2=\"{}\" y1=\"{target:.1}\" y2=\"{target:.1}\" stroke=\"green\" stroke-dasharray=\"6 4\"/>\n",
        left + plot_w
    );
    let setups = [("standalone", "#3366cc"), ("3-member", "#dc3912")];
    for (i, w) in workloads.iter().enumerate() {
        let x = left + slot * i as f64;
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{w}</text>\n",
            x + slot / 2.0,
            top + plot_h + 20.0
        );
        for (k, (setup, color)) in setups.iter().enumerate() {
            let Some(b) = bars.iter().find(|b| b.workload == *w && b.setup == *setup) else {
                continue;
            };
            let bar_w = slot * 0.38;
            let bx = x + slot * 0.1 + bar_w * k as f64 * 1.05;
            let by = y(b.ratio);
            svg += &format!(
                "<rect x=\"{bx:.1}\" y=\"{by:.1}\" width=\"{bar_w:.1}\" height=\"{:.1}\" fill=\"{color}\"><title>{w} {setup}: {:.2}x</title></rect>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\">{:.1}</text>\n",
                top + plot_h - by,
                b.ratio,
                bx + bar_w / 2.0,
                by - 4.0,
                b.ratio
            );
        }
    }
    let lx = left + plot_w + 15.0;
    for (k, (setup, color)) in setups.iter().enumerate() {
        let ly = top + 10.0 + 22.0 * k as f64;
        svg += &format!(
            "<rect x=\"{lx}\" y=\"{ly}\" width=\"14\" height=\"14\" fill=\"{color}\"/>\n\
             <text x=\"{}\" y=\"{}\">{setup}</text>\n",
            lx + 20.0,
            ly + 12.0
        );
    }
    svg += &format!(
        "<line x1=\"{lx}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"green\" stroke-dasharray=\"6 4\"/>\n\
         <text x=\"{}\" y=\"{}\">3x target</text>\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">ratio (log scale); above 1x Corral is faster</text>\n</svg>\n",
        lx + 14.0,
        lx + 20.0,
        top + 10.0 + 44.0 + 11.0,
        left + plot_w / 2.0,
        height - 12.0,
        ly = top + 10.0 + 44.0 + 7.0
    );
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_median_ratios_and_draw_as_svg() {
        let results = serde_json::json!({
            "standalone": {
                "create": {
                    "corral": [{"ops_per_sec": 300.0}, {"ops_per_sec": 400.0}, {"ops_per_sec": 100.0}],
                    "zookeeper": [{"ops_per_sec": 100.0}, {"ops_per_sec": 100.0}, {"ops_per_sec": 100.0}]
                }
            },
            "3-member": {
                "get": {
                    "corral": [{"ops_per_sec": 50.0}],
                    "zookeeper": [{"ops_per_sec": 100.0}]
                }
            }
        });
        let bars = throughput_bars(&results);
        assert_eq!(bars.len(), 2);
        assert_eq!(bars[0].ratio, 3.0);
        assert_eq!(bars[1].ratio, 0.5);
        let svg = throughput_svg(&bars).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("create") && svg.contains("3x target"));
    }
}
