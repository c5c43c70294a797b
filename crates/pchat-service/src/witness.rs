//! Witnesses of the compliance chain, kept outside the archive so that whoever can write the archive database
//! cannot silently rewrite them: each names a pool's archived event by id and hash (and, with a chain key, carries
//! an HMAC tag over them). Every server writes the newest head it appended to its witness file
//! (`compliance.witness_file`, default `compliance-witness.json` in the data directory), and every export run
//! writes one beside its files (`….chain.json`). `verify` checks that the archive still holds each witnessed event
//! with the witnessed hash: deleting the newest events, or rebuilding the whole chain, leaves a witness unmatched.

use std::path::Path;

use pchat_store::compliance::ChainKey;
use serde::{Deserialize, Serialize};

use crate::export::{OutFile, write_atomically};

/// One witnessed event of a pool's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witness {
    pub pool: String,
    pub id: i64,
    pub hash: String,
    /// HMAC over (pool, id, hash) with the chain key, when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl Witness {
    pub fn new(pool: &str, id: i64, hash: &str, key: Option<&ChainKey>) -> Self {
        Self { pool: pool.to_owned(), id, hash: hash.to_owned(), tag: key.map(|k| k.witness_tag(pool, id, hash)) }
    }

    /// Whether the tag matches the key (a witness without a tag never does).
    pub fn tag_matches(&self, key: &ChainKey) -> bool {
        self.tag.as_deref() == Some(key.witness_tag(&self.pool, self.id, &self.hash).as_str())
    }

    /// The witness an export run writes beside its files, named after its range.
    pub(crate) fn export_file(&self, first_id: i64) -> OutFile {
        let name = format!("{}_{first_id:012}-{:012}.chain.json", safe(&self.pool), self.id);
        OutFile { name, bytes: serde_json::to_vec_pretty(self).unwrap_or_default() }
    }
}

/// The witness file of a server: the newest head it appended, per pool.
#[derive(Debug, Default, Serialize, Deserialize)]
struct WitnessFile {
    heads: Vec<Witness>,
}

/// Records a pool's new head in the witness file at `path` (written atomically, then synced).
pub(crate) fn record_head(path: &Path, witness: Witness) -> std::io::Result<()> {
    let mut file: WitnessFile =
        std::fs::read(path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default();
    file.heads.retain(|w| w.pool != witness.pool);
    file.heads.push(witness);
    file.heads.sort_by(|a, b| a.pool.cmp(&b.pool));
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "witness.json".into());
    std::fs::create_dir_all(dir)?;
    write_atomically(dir, &OutFile { name, bytes: serde_json::to_vec_pretty(&file).unwrap_or_default() })
}

/// The witnesses in a server's witness file (none when it does not exist), each with where it came from.
pub fn read_witness_file(path: &Path) -> Result<Vec<(String, Witness)>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(format!("cannot read the witness file {}: {e}", path.display())),
    };
    let file: WitnessFile = serde_json::from_slice(&bytes)
        .map_err(|e| format!("the witness file {} is not readable: {e}", path.display()))?;
    Ok(file.heads.into_iter().map(|w| (path.display().to_string(), w)).collect())
}

/// The witnesses an export wrote into a directory (`*.chain.json`), each with its file name.
pub fn read_export_witnesses(dir: &Path) -> Result<Vec<(String, Witness)>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut out = vec![];
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.to_string_lossy().ends_with(".chain.json") {
            continue;
        }
        let text = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let witness: Witness =
            serde_json::from_slice(&text).map_err(|e| format!("{} is not a chain witness: {e}", path.display()))?;
        out.push((path.display().to_string(), witness));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_witness_file_keeps_the_newest_head_per_pool() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.json");
        assert!(read_witness_file(&path).unwrap().is_empty());
        let key = ChainKey::new(&[3u8; 32]).unwrap();
        record_head(&path, Witness::new("emea", 4, "h4", Some(&key))).unwrap();
        record_head(&path, Witness::new("apac", 2, "h2", None)).unwrap();
        record_head(&path, Witness::new("emea", 9, "h9", Some(&key))).unwrap();
        let read: Vec<Witness> = read_witness_file(&path).unwrap().into_iter().map(|(_, w)| w).collect();
        assert_eq!(read, [Witness::new("apac", 2, "h2", None), Witness::new("emea", 9, "h9", Some(&key))]);
        assert!(read[1].tag_matches(&key) && !read[0].tag_matches(&key));
        let mut forged = read[1].clone();
        forged.id = 8;
        assert!(!forged.tag_matches(&key));
    }
}
