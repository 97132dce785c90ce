//! setquota, listquota and delquota, as zkCli does them: the client writes the quota under
//! /zookeeper/quota, the server keeps the usage in `zookeeper_stats`.

use crate::format::error_text;
use crate::shell::{usage_of, Args, Sink};
use corral_proto::quota::Limits;
use zookeeper_client as zk;

const QUOTA_ROOT: &str = "/zookeeper/quota";
const LIMITS: &str = "zookeeper_limits";
const STATS: &str = "zookeeper_stats";

/// Applies `-n|-b|-N|-B value` to limits.
fn set_limit(l: &mut Limits, flag: char, value: i64) {
    match flag {
        'n' => l.count = value,
        'b' => l.bytes = value,
        'N' => l.count_hard = value,
        'B' => l.bytes_hard = value,
        _ => {}
    }
}

const FLAGS: [char; 4] = ['n', 'b', 'N', 'B'];

pub async fn set(c: &zk::Client, _sink: &dyn Sink, rest: &[String]) -> Result<(), String> {
    let a = Args::parse(rest, "nbNB")?;
    let Some(path) = a.positional.first() else {
        return Err(usage_of("setquota"));
    };
    let given: Vec<(char, i64)> = FLAGS
        .iter()
        .filter_map(|f| a.value(*f).map(|v| (*f, v)))
        .map(|(f, v)| {
            v.parse()
                .map(|v| (f, v))
                .map_err(|_| format!("{v:?} is not a number"))
        })
        .collect::<Result<_, _>>()?;
    if given.is_empty() {
        return Err(usage_of("setquota"));
    }
    if c.check_stat(path)
        .await
        .map_err(|e| error_text(&e, path))?
        .is_none()
    {
        return Err(format!("{path} does not exist."));
    }
    check_no_other_quota(c, path).await?;
    let quota_dir = format!("{QUOTA_ROOT}{path}");
    ensure_path(c, &quota_dir).await?;
    let limits_path = format!("{quota_dir}/{LIMITS}");
    let mut limits = match c.get_data(&limits_path).await {
        Ok((data, _)) => Limits::parse(&data),
        Err(zk::Error::NoNode) => Limits::NONE,
        Err(e) => return Err(error_text(&e, &limits_path)),
    };
    for (flag, value) in given {
        set_limit(&mut limits, flag, value);
    }
    write(c, &limits_path, &limits.text()).await?;
    let stats_path = format!("{quota_dir}/{STATS}");
    match c.create(&stats_path, b"count=0,bytes=0", &open()).await {
        Ok(_) | Err(zk::Error::NodeExists) => Ok(()),
        Err(e) => Err(error_text(&e, &stats_path)),
    }
}

pub async fn list(c: &zk::Client, sink: &dyn Sink, rest: &[String]) -> Result<(), String> {
    let [path] = rest else {
        return Err(usage_of("listquota"));
    };
    let limits_path = format!("{QUOTA_ROOT}{path}/{LIMITS}");
    sink.err(&format!("absolute path is {limits_path}"));
    let limits = match c.get_data(&limits_path).await {
        Ok((data, _)) => String::from_utf8_lossy(&data).into_owned(),
        Err(zk::Error::NoNode) => {
            sink.out(&format!("quota for {path} does not exist."));
            return Ok(());
        }
        Err(e) => return Err(error_text(&e, &limits_path)),
    };
    sink.out(&format!("Output quota for {path} {limits}"));
    let stats_path = format!("{QUOTA_ROOT}{path}/{STATS}");
    if let Ok((data, _)) = c.get_data(&stats_path).await {
        sink.out(&format!(
            "Output stat for {path} {}",
            String::from_utf8_lossy(&data)
        ));
    }
    Ok(())
}

pub async fn delete(c: &zk::Client, _sink: &dyn Sink, rest: &[String]) -> Result<(), String> {
    let a = Args::parse(rest, "")?;
    let Some(path) = a.positional.first() else {
        return Err(usage_of("delquota"));
    };
    let quota_dir = format!("{QUOTA_ROOT}{path}");
    let limits_path = format!("{quota_dir}/{LIMITS}");
    let flags: Vec<char> = FLAGS.iter().copied().filter(|f| a.has(*f)).collect();
    let (data, _) = c.get_data(&limits_path).await.map_err(|e| match e {
        zk::Error::NoNode => format!("quota for {path} does not exist."),
        e => error_text(&e, &limits_path),
    })?;
    if flags.is_empty() {
        // The whole quota goes: both nodes, then the directory if nothing else is under it.
        for p in [format!("{quota_dir}/{STATS}"), limits_path] {
            match c.delete(&p, None).await {
                Ok(()) | Err(zk::Error::NoNode) => {}
                Err(e) => return Err(error_text(&e, &p)),
            }
        }
        let _ = c.delete(&quota_dir, None).await;
        return Ok(());
    }
    let mut limits = Limits::parse(&data);
    for f in flags {
        set_limit(&mut limits, f, -1);
    }
    write(c, &limits_path, &limits.text()).await
}

/// zkCli refuses a quota inside or above another quota.
async fn check_no_other_quota(c: &zk::Client, path: &str) -> Result<(), String> {
    let mut prefix = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        prefix.push('/');
        prefix.push_str(part);
        if prefix == path {
            break;
        }
        let limits = format!("{QUOTA_ROOT}{prefix}/{LIMITS}");
        if matches!(c.check_stat(&limits).await, Ok(Some(_))) {
            return Err(format!("{path} has a parent {prefix} which has a quota"));
        }
    }
    let below = format!("{QUOTA_ROOT}{path}");
    if let Ok(nodes) = crate::shell::subtree_bfs(c, &below).await {
        let limits_suffix = format!("/{LIMITS}");
        if let Some(other) = nodes
            .iter()
            .find(|p| p.ends_with(&limits_suffix) && **p != format!("{below}{limits_suffix}"))
        {
            let child = &other[QUOTA_ROOT.len()..other.len() - limits_suffix.len()];
            return Err(format!("{path} has a child {child} which has a quota"));
        }
    }
    Ok(())
}

fn open() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

async fn ensure_path(c: &zk::Client, path: &str) -> Result<(), String> {
    let mut prefix = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        prefix.push('/');
        prefix.push_str(part);
        match c.create(&prefix, b"", &open()).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(error_text(&e, &prefix)),
        }
    }
    Ok(())
}

async fn write(c: &zk::Client, path: &str, text: &str) -> Result<(), String> {
    match c.set_data(path, text.as_bytes(), None).await {
        Ok(_) => Ok(()),
        Err(zk::Error::NoNode) => c
            .create(path, text.as_bytes(), &open())
            .await
            .map(|_| ())
            .map_err(|e| error_text(&e, path)),
        Err(e) => Err(error_text(&e, path)),
    }
}
