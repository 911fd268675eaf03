//! The settings of an extraction run, checked once.

use super::*;

/// Name and version of the augmentation sampling rule recorded in manifests.
pub const SAMPLER: &str = "torchvision-random-resized-crop/splitmix64-sha256-v1";

/// Settings of an extraction run.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Augmented views per image (0 = eval view only).
    pub views: u32,
    /// Augmentation seed.
    pub seed: u64,
    /// Rows per forward pass.
    pub batch_size: usize,
    /// Storage dtype of the features.
    pub dtype: FeatureDType,
    /// Maximum rows per shard.
    pub shard_size: usize,
    /// Discard an incompatible cache instead of refusing.
    pub force: bool,
    /// Decoder limits (decompression-bomb guard).
    pub limits: DecodeLimits,
    /// RandomResizedCrop ranges, flip probability and resize filter of the augmented views.
    pub augment: AugmentParams,
    /// Extract only this part of an N-way partition, into `CACHE_DIR/parts/IIII-of-NNNN/`
    /// (see `headstart_cache::partition`); `None` = the whole dataset into `CACHE_DIR`.
    pub part: Option<Part>,
    /// Where the weights were read from, recorded in a new cache (so that `predict` can name the
    /// file a head's features came from).
    pub weights_file: Option<String>,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        Self {
            views: 5,
            seed: 43,
            batch_size: 32,
            dtype: FeatureDType::F32,
            shard_size: 4096,
            force: false,
            limits: DecodeLimits::default(),
            augment: AugmentParams::default(),
            part: None,
            weights_file: None,
        }
    }
}

/// [`ExtractOptions`] whose values have been checked ([`ExtractOptions::check`]): what
/// [`extract`](crate::extract) takes, so nothing checks them again. Reads as the plain options.
#[derive(Debug, Clone)]
pub struct ValidExtractOptions(ExtractOptions);

impl std::ops::Deref for ValidExtractOptions {
    type Target = ExtractOptions;
    fn deref(&self) -> &ExtractOptions {
        &self.0
    }
}

impl ExtractOptions {
    /// Checks the values once into [`ValidExtractOptions`]; an `Error::Invalid` names the first
    /// bad one.
    pub fn check(self) -> Result<ValidExtractOptions> {
        self.problems()?;
        Ok(ValidExtractOptions(self))
    }

    fn problems(&self) -> Result<()> {
        let bad = |param: &'static str, problem: String| Err(Error::Invalid { param, problem });
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        if self.shard_size == 0 {
            return bad("shard_size", "must be at least 1".into());
        }
        if (self.views as usize + 1) > self.shard_size {
            return bad(
                "shard_size",
                format!(
                    "{} cannot hold the {} rows of one image; use at least {}",
                    self.shard_size,
                    self.views + 1,
                    self.views + 1
                ),
            );
        }
        self.augment.check().map_err(|e| Error::Invalid {
            param: "augment",
            problem: e.to_string(),
        })
    }

    /// The augmentation record for the manifest.
    pub fn augment_config(&self, crop_size: u32) -> AugmentConfig {
        AugmentConfig {
            views: self.views,
            crop_size,
            params: self.augment,
            sampler: SAMPLER.to_string(),
        }
    }
}
