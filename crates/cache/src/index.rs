//! A cache opened for training: the manifest's settings, classes and shards, and per image only
//! what training needs (label, split, status: 6 bytes instead of a few hundred), read in one
//! streaming pass. A million-image cache opens in tens of MB.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::lock::DirLock;
use crate::manifest::{
    CacheSettings, ImageEntry, ImageStatus, Manifest, ManifestRepr, ShardEntry, Split,
};
use crate::reader::FeatureCache;
use crate::{Error, Result};

/// Label, split and status of every image, column by column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageTable {
    /// Class index per image.
    pub label: Vec<u32>,
    /// Dataset-defined split per image.
    pub split: Vec<Option<Split>>,
    /// Status per image.
    pub status: Vec<ImageStatus>,
}

impl ImageTable {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.label.len()
    }

    /// True without images.
    pub fn is_empty(&self) -> bool {
        self.label.is_empty()
    }

    /// Indices of images whose status is `ok`.
    pub fn usable(&self) -> impl Iterator<Item = usize> + '_ {
        self.status
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == ImageStatus::Ok)
            .map(|(i, _)| i)
    }
}

impl<'de> Deserialize<'de> for ImageTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        /// The fields training needs; the others are skipped while parsing.
        #[derive(Deserialize)]
        struct Summary {
            label: usize,
            #[serde(default)]
            split: Option<Split>,
            status: ImageStatus,
        }
        struct Columns;
        impl<'de> Visitor<'de> for Columns {
            type Value = ImageTable;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of image entries")
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<ImageTable, A::Error> {
                let mut t = ImageTable::default();
                while let Some(s) = seq.next_element::<Summary>()? {
                    let label = u32::try_from(s.label)
                        .map_err(|_| serde::de::Error::custom("label out of range"))?;
                    t.label.push(label);
                    t.split.push(s.split);
                    t.status.push(s.status);
                }
                Ok(t)
            }
        }
        d.deserialize_seq(Columns)
    }
}

/// A cache opened for training (see the module docs). Holds the reader's shared lock.
#[derive(Debug)]
pub struct CacheIndex {
    /// The cache directory.
    pub dir: PathBuf,
    /// The manifest without its `images` (settings, classes, shards, rows).
    pub manifest: Manifest,
    /// Per-image label, split and status.
    pub images: ImageTable,
    /// sha256 of `manifest.json` as read.
    pub manifest_sha256: String,
    _lock: DirLock,
}

/// Hashes what passes through.
struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

impl CacheIndex {
    /// Opens `dir` (shared lock, as [`FeatureCache::open`]) and reads its manifest compactly.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = Manifest::path_in(dir);
        let lock = FeatureCache::lock_for_reading(dir)?;
        let file = crate::safe_fs::open_regular(&path).map_err(|e| Error::io(&path, e))?;
        let mut reader = HashingReader {
            inner: std::io::BufReader::with_capacity(1 << 20, file),
            hash: Sha256::new(),
        };
        let bad = |reason: crate::error::ManifestError| Error::Manifest {
            path: path.clone(),
            reason,
        };
        let repr: ManifestRepr<ImageTable> = {
            let mut de = serde_json::Deserializer::from_reader(&mut reader);
            let r = ManifestRepr::deserialize(&mut de).map_err(|e| bad(e.into()))?;
            de.end().map_err(|e| bad(e.into()))?;
            r
        };
        // Whatever follows the document (nothing, normally) is part of the file's hash.
        std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| Error::io(&path, e))?;
        let manifest_sha256 = hex::encode(reader.hash.finalize());
        let (manifest, images) = repr.into_parts();
        crate::manifest::check_format(&manifest.format, manifest.format_version).map_err(bad)?;
        crate::manifest::check_shards(&manifest.shards, manifest.rows).map_err(bad)?;
        let ok_images = images
            .status
            .iter()
            .filter(|&&s| s == ImageStatus::Ok)
            .count();
        crate::manifest::check_sizes(
            &manifest.settings,
            manifest.classes.len(),
            ok_images,
            manifest.rows,
        )
        .map_err(bad)?;
        if let Some((i, &l)) = images
            .label
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= manifest.classes.len())
        {
            return Err(bad(crate::error::ManifestError::Inconsistent(format!(
                "image {i} has label {l} but there are {} classes",
                manifest.classes.len()
            ))));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            images,
            manifest_sha256,
            _lock: lock,
        })
    }

    /// The settings the features were computed with.
    pub fn settings(&self) -> &CacheSettings {
        &self.manifest.settings
    }

    /// Class names.
    pub fn classes(&self) -> &[String] {
        &self.manifest.classes
    }

    /// The committed shards.
    pub fn shards(&self) -> &[ShardEntry] {
        &self.manifest.shards
    }
    /// The full manifest entries of images `wanted` (indices into the manifest's images), in
    /// that order: `manifest.json` is read again in one streaming pass keeping only those, so
    /// a few entries of a million-image cache cost a pass, not the whole list in memory. The
    /// file must still be the one opened (its sha256 is checked).
    pub fn image_entries(&self, wanted: &[usize]) -> Result<Vec<ImageEntry>> {
        let path = Manifest::path_in(&self.dir);
        let file = crate::safe_fs::open_regular(&path).map_err(|e| Error::io(&path, e))?;
        let mut reader = HashingReader {
            inner: std::io::BufReader::with_capacity(1 << 20, file),
            hash: Sha256::new(),
        };
        let bad = |reason: crate::error::ManifestError| Error::Manifest {
            path: path.clone(),
            reason,
        };
        let mut slot: std::collections::HashMap<usize, Vec<usize>> = Default::default();
        for (k, &i) in wanted.iter().enumerate() {
            slot.entry(i).or_default().push(k);
        }
        let mut picked: Vec<Option<ImageEntry>> = vec![None; wanted.len()];
        {
            let mut de = serde_json::Deserializer::from_reader(&mut reader);
            serde::de::DeserializeSeed::deserialize(
                PickImages {
                    slot: &slot,
                    out: &mut picked,
                },
                &mut de,
            )
            .map_err(|e| bad(e.into()))?;
            de.end().map_err(|e| bad(e.into()))?;
        }
        std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| Error::io(&path, e))?;
        if hex::encode(reader.hash.finalize()) != self.manifest_sha256 {
            return Err(bad(crate::error::ManifestError::Inconsistent(
                "changed since the cache was opened".into(),
            )));
        }
        picked
            .into_iter()
            .zip(wanted)
            .map(|(e, &i)| {
                e.ok_or_else(|| {
                    bad(crate::error::ManifestError::Inconsistent(format!(
                        "no image {i} (it lists {})",
                        self.images.len()
                    )))
                })
            })
            .collect()
    }
}

/// Deserialises a manifest keeping only the image entries asked for (everything else is
/// skipped as it streams by).
struct PickImages<'a> {
    /// Image index → positions in the output.
    slot: &'a std::collections::HashMap<usize, Vec<usize>>,
    out: &'a mut Vec<Option<ImageEntry>>,
}

impl<'de> serde::de::DeserializeSeed<'de> for PickImages<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PickImages<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a cache manifest")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "images" {
                map.next_value_seed(PickSeq {
                    slot: self.slot,
                    out: &mut *self.out,
                })?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// The `images` list of [`PickImages`].
struct PickSeq<'a> {
    slot: &'a std::collections::HashMap<usize, Vec<usize>>,
    out: &'a mut Vec<Option<ImageEntry>>,
}

impl<'de> serde::de::DeserializeSeed<'de> for PickSeq<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PickSeq<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of image entries")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        let mut i = 0usize;
        loop {
            match self.slot.get(&i) {
                Some(positions) => {
                    let Some(e) = seq.next_element::<ImageEntry>()? else {
                        break;
                    };
                    for &k in positions {
                        self.out[k] = Some(e.clone());
                    }
                }
                None => {
                    if seq.next_element::<serde::de::IgnoredAny>()?.is_none() {
                        break;
                    }
                }
            }
            i += 1;
        }
        Ok(())
    }
}
