//! The options that say where a broker's data lives (configuration file,
//! data dir, metadata store, object store and S3 settings), shared by
//! `strata serve` and the tools that read the same stores
//! (`strata export parquet`), so both resolve them the same way: the file,
//! then `STRATA_*` environment, then flags.

use std::path::PathBuf;

use clap::Args;

use crate::config::Config;

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// TOML configuration file (every key: docs/configuration.md).
    #[arg(long, env = "STRATA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for all local state [default: ./data].
    #[arg(long, env = "STRATA_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Object store: a directory, file:///dir or s3://bucket/prefix [default: DATA_DIR/objects].
    #[arg(long, env = "STRATA_OBJECT_STORE", value_name = "URL")]
    pub object_store: Option<String>,
    /// Metadata store: sqlite://PATH, or postgres://USER:PASSWORD@HOST:PORT/DATABASE for a
    /// cluster [default: sqlite://DATA_DIR/metadata.db].
    #[arg(
        long,
        env = "STRATA_METADATA",
        value_name = "URL",
        hide_env_values = true
    )]
    pub metadata: Option<String>,
    /// S3 endpoint, e.g. http://localhost:9000 for MinIO [env AWS_ENDPOINT_URL also works].
    #[arg(long, env = "STRATA_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region [env AWS_REGION also works].
    #[arg(long, env = "STRATA_S3_REGION")]
    pub s3_region: Option<String>,
    /// S3 access key id [env AWS_ACCESS_KEY_ID also works].
    #[arg(long, env = "STRATA_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key [env AWS_SECRET_ACCESS_KEY also works].
    #[arg(long, env = "STRATA_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Allow plain-http S3 endpoints [env AWS_ALLOW_HTTP also works].
    #[arg(long, env = "STRATA_S3_ALLOW_HTTP", value_name = "BOOL")]
    pub s3_allow_http: Option<bool>,
    /// Path-style S3 requests (MinIO needs them).
    #[arg(long, env = "STRATA_S3_PATH_STYLE", value_name = "BOOL")]
    pub s3_path_style: Option<bool>,
    /// CA certificates (PEM bundle) an https S3 endpoint may chain to,
    /// besides the system's (a private CA in front of MinIO, say).
    #[arg(long, env = "STRATA_S3_CA_FILE", value_name = "FILE")]
    pub s3_ca_file: Option<PathBuf>,
}

impl StoreArgs {
    /// The configuration file (or the defaults) with these flags and their
    /// environment variables on top; not validated yet (the caller adds
    /// its own flags first).
    pub fn base_config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        macro_rules! set {
            ($flag:expr => $($field:tt)+) => {
                if let Some(value) = $flag {
                    config.$($field)+ = value;
                }
            };
        }
        set!(self.data_dir.clone() => data_dir);
        set!(self.object_store.clone().map(Some) => object_store);
        set!(self.metadata.clone().map(|url| Some(crate::config::StoreUrl(url))) => metadata);
        set!(self.s3_endpoint.clone().map(Some) => s3.endpoint);
        set!(self.s3_region.clone().map(Some) => s3.region);
        set!(self.s3_access_key_id.clone().map(Some) => s3.access_key_id);
        set!(self.s3_secret_access_key.clone().map(Some) => s3.secret_access_key);
        set!(self.s3_allow_http.map(Some) => s3.allow_http);
        set!(self.s3_path_style.map(Some) => s3.path_style);
        set!(self.s3_ca_file.clone().map(Some) => s3.ca_file);
        Ok(config)
    }
}
