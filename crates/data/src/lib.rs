//! Pilot-Data storage: the pilot stores of the P* model, and checksummed transfers in and
//! out of them.
//!
//! A pilot store ([`Store`], opened from a [`StoreUrl`]) is a directory (`file:///path`),
//! a directory over SFTP (`sftp://[user@]host[:port]/path`) or an S3 prefix
//! (`s3://bucket/prefix`). Keys inside it are `/`-separated relative paths. Every transfer
//! is streamed in chunks (files can be gigabytes) and its size and SHA-256 computed on the
//! way: [`Store::put_file`] says what it stored as a [`DataFile`](pstar_model::DataFile),
//! and [`Store::get_file`] and [`Store::copy_to`] check what arrives against one
//! ([`DataError::Checksum`] if a file changed in the store behind pstar's back). A file
//! appears whole in its destination or not at all, also when a transfer is cancelled
//! (its future dropped). Every step is bounded in time ([`DEFAULT_TIMEOUT`]): a store that
//! goes away ends a transfer with an error naming it. [`Store::check`] tells whether a
//! store is there and usable before anything is placed in it.
//!
//! [`expand_files`] turns a data unit's file specs (files, directories, globs) into the
//! local files and their paths in the data unit; [`hash_file`] checksums a local file.
//!
//! # Stores and their settings
//!
//! - **file://**: the directory is made if missing. Files being written wait in its
//!   `.pstar-partial/` directory. [`Store::local_path`] gives a key's file, to link to.
//! - **sftp://**: the system's OpenSSH client, connected like `ssh://` pilots: the user's
//!   `~/.ssh/config`, keys, agent and known hosts (a new host is added), or the client
//!   configuration file named by `PSTAR_SSH_CONFIG`. One connection per store, reopened
//!   when it breaks. Files being written are `.pstar-part.*` beside their final name.
//! - **s3://**: path-style requests, to the endpoint in `PSTAR_S3_ENDPOINT` (else
//!   `AWS_ENDPOINT_URL`, else AWS), region `PSTAR_S3_REGION` (else `AWS_REGION`, else
//!   `us-east-1`). Credentials come from the file named by `PSTAR_S3_CREDENTIALS_FILE`,
//!   else from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`). The
//!   file must be a regular file of this user, mode `0600` (or stricter), holding
//!   ```text
//!   access_key_id = AKIA...
//!   secret_access_key = ...
//!   ```
//!   (the `aws_access_key_id` / `aws_secret_access_key` spelling of `~/.aws/credentials`,
//!   comments and one `[section]` line are accepted too). Uploads go as multipart uploads
//!   of 8 MiB parts, 4 at a time.
//!
//! A URL never carries a password or a query: such URLs are refused, and so the
//! `Display` of a [`StoreUrl`] (used in every message) never shows a secret.
//!
//! # Example
//!
//! ```
//! use pstar_data::{Store, StoreUrl};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), pstar_data::DataError> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let input = dir.path().join("reads.fq");
//! # std::fs::write(&input, "@r1\nACGT\n+\n!!!!\n").unwrap();
//! let url: StoreUrl = format!("file://{}/store", dir.path().display()).parse()?;
//! let store = Store::open(&url).await?;
//! store.check().await?;
//! let file = store.put_file(&input, "reads-1/reads.fq").await?;
//! assert_eq!(file.size, 16);
//! assert_eq!(store.list("reads-1").await?, [("reads-1/reads.fq".to_string(), 16)]);
//!
//! let back = dir.path().join("back/reads.fq");
//! store.get_file("reads-1/reads.fq", &back, &file).await?;
//! assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&input).unwrap());
//! # Ok(())
//! # }
//! ```

mod error;
mod files;
mod s3env;
mod sftp;
mod store;
mod url;

pub use error::DataError;
pub use files::{Digest, expand_files, hash_file};
pub use s3env::{S3_CREDENTIALS_FILE_ENV, S3_ENDPOINT_ENV, S3_REGION_ENV};
pub use sftp::SSH_CONFIG_ENV;
pub use store::{DEFAULT_TIMEOUT, Store};
pub use url::{StoreKind, StoreUrl};
