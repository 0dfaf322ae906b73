//! The dense feature matrix and its NumPy `.npy` form, so the same features can be clustered
//! here and by scikit-learn (`bench/kmeans_sklearn.py`) for comparison.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::KMeansError;

/// Row-major dense matrix of f32 features.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Matrix {
    pub rows: usize,
    pub dims: usize,
    /// `rows * dims` values, row after row.
    pub data: Vec<f32>,
}

impl Matrix {
    /// An empty matrix whose rows will have `dims` columns.
    pub fn new(dims: usize) -> Self {
        Self::with_capacity(0, dims)
    }

    /// An empty matrix with room for `rows` rows of `dims` columns.
    pub fn with_capacity(rows: usize, dims: usize) -> Self {
        Matrix {
            rows: 0,
            dims,
            data: Vec::with_capacity(rows.saturating_mul(dims)),
        }
    }

    /// A matrix over an existing row-major buffer.
    pub fn from_vec(rows: usize, dims: usize, data: Vec<f32>) -> Result<Self, KMeansError> {
        let m = Matrix { rows, dims, data };
        m.check_shape()?;
        Ok(m)
    }

    /// Appends one row.
    ///
    /// # Panics
    /// If `row.len() != self.dims`: rows come from one featuriser, so a wrong length is a bug.
    pub fn push(&mut self, row: &[f32]) {
        assert_eq!(
            row.len(),
            self.dims,
            "Matrix::push: row has {} values, matrix has {} dims",
            row.len(),
            self.dims
        );
        self.data.extend_from_slice(row);
        self.rows += 1;
    }

    /// Appends one row, or says why not: for rows read from files (e.g. centroids in a
    /// profile set) rather than made by the featuriser.
    pub fn try_push(&mut self, row: &[f32]) -> Result<(), KMeansError> {
        if row.len() != self.dims {
            return Err(KMeansError::RowLength {
                row: self.rows,
                len: row.len(),
                dims: self.dims,
            });
        }
        self.data.extend_from_slice(row);
        self.rows += 1;
        Ok(())
    }

    /// Row `i`. Panics if `i >= rows`, like slice indexing.
    #[inline]
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dims..(i + 1) * self.dims]
    }

    /// Checks that `data` holds exactly `rows * dims` values.
    pub fn check_shape(&self) -> Result<(), KMeansError> {
        let expected = self.rows.checked_mul(self.dims);
        if expected != Some(self.data.len()) {
            return Err(KMeansError::ShapeMismatch {
                rows: self.rows,
                dims: self.dims,
                values: self.data.len(),
            });
        }
        Ok(())
    }

    /// Writes the matrix as NumPy `.npy` version 1.0: dtype `<f4`, C order, shape `(rows, dims)`.
    pub fn write_npy(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = path.as_ref();
        if let Err(e) = self.check_shape() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: {e}", path.display()),
            ));
        }
        let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let mut out = BufWriter::new(File::create(path).map_err(with_path)?);
        let mut header = format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
            self.rows, self.dims
        );
        // The format wants magic + version + length + header to end on a 64-byte boundary,
        // with the header ending in '\n'.
        let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
        header.extend(std::iter::repeat_n(' ', (64 - unpadded % 64) % 64));
        header.push('\n');
        let len = u16::try_from(header.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "npy header too long"))?;
        out.write_all(MAGIC).map_err(with_path)?;
        out.write_all(&[1, 0]).map_err(with_path)?;
        out.write_all(&len.to_le_bytes()).map_err(with_path)?;
        out.write_all(header.as_bytes()).map_err(with_path)?;
        let mut buf = Vec::with_capacity(BLOCK * 4);
        for block in self.data.chunks(BLOCK) {
            buf.clear();
            for v in block {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            out.write_all(&buf).map_err(with_path)?;
        }
        out.flush().map_err(with_path)
    }

    /// Reads a NumPy `.npy` file (versions 1.0 to 3.0) holding a 1-D or 2-D array of
    /// little- or big-endian `f4` or `f8`; `f8` is narrowed to f32 and a 1-D array becomes one
    /// column. Fortran order is accepted and transposed.
    pub fn read_npy(path: impl AsRef<Path>) -> io::Result<Matrix> {
        let path = path.as_ref();
        let bad = |msg: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {msg}", path.display()),
            )
        };
        let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let file = File::open(path).map_err(with_path)?;
        let file_len = file.metadata().map_err(with_path)?.len();
        let mut input = BufReader::new(file);

        let mut preamble = [0u8; 8];
        input
            .read_exact(&mut preamble)
            .map_err(|_| bad("too short to be a .npy file".into()))?;
        if &preamble[..6] != MAGIC {
            return Err(bad("not a .npy file (missing \\x93NUMPY magic)".into()));
        }
        let (header_len, len_bytes) = match preamble[6] {
            1 => {
                let mut b = [0u8; 2];
                input
                    .read_exact(&mut b)
                    .map_err(|_| bad("truncated header".into()))?;
                (usize::from(u16::from_le_bytes(b)), 2)
            }
            2 | 3 => {
                let mut b = [0u8; 4];
                input
                    .read_exact(&mut b)
                    .map_err(|_| bad("truncated header".into()))?;
                (u32::from_le_bytes(b) as usize, 4)
            }
            v => return Err(bad(format!("unsupported .npy version {v}.{}", preamble[7]))),
        };
        let mut header = vec![0u8; header_len];
        input
            .read_exact(&mut header)
            .map_err(|_| bad("truncated header".into()))?;
        let header = String::from_utf8_lossy(&header);
        let h = parse_header(&header).map_err(bad)?;

        let values = h
            .rows
            .checked_mul(h.dims)
            .ok_or_else(|| bad(format!("shape ({}, {}) is too large", h.rows, h.dims)))?;
        // Check the size before allocating, so a damaged header cannot ask for terabytes.
        let data_start = (preamble.len() + len_bytes + header_len) as u64;
        let held = file_len.saturating_sub(data_start) / h.dtype.size() as u64;
        if held < values as u64 {
            return Err(bad(format!(
                "data ends early: shape ({}, {}) needs {values} values, the file holds {held}",
                h.rows, h.dims
            )));
        }
        let mut data = Vec::with_capacity(values);
        let mut buf = vec![0u8; BLOCK * h.dtype.size()];
        while data.len() < values {
            let want = (values - data.len()).min(BLOCK) * h.dtype.size();
            input.read_exact(&mut buf[..want]).map_err(with_path)?;
            h.dtype.decode(&buf[..want], &mut data);
        }
        if h.fortran_order && h.rows > 1 && h.dims > 1 {
            // Column-major on disk: element (r, c) sits at c * rows + r.
            let mut c_order = vec![0.0f32; values];
            for (c, column) in data.chunks_exact(h.rows).enumerate() {
                for (r, &v) in column.iter().enumerate() {
                    c_order[r * h.dims + c] = v;
                }
            }
            data = c_order;
        }
        Ok(Matrix {
            rows: h.rows,
            dims: h.dims,
            data,
        })
    }
}

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Values converted per buffered read or write.
const BLOCK: usize = 1 << 16;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Dtype {
    F4 { big: bool },
    F8 { big: bool },
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F4 { .. } => 4,
            Dtype::F8 { .. } => 8,
        }
    }

    fn decode(self, bytes: &[u8], out: &mut Vec<f32>) {
        match self {
            Dtype::F4 { big } => out.extend(bytes.chunks_exact(4).map(|b| {
                let b = [b[0], b[1], b[2], b[3]];
                if big {
                    f32::from_be_bytes(b)
                } else {
                    f32::from_le_bytes(b)
                }
            })),
            Dtype::F8 { big } => out.extend(bytes.chunks_exact(8).map(|b| {
                let b = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
                (if big {
                    f64::from_be_bytes(b)
                } else {
                    f64::from_le_bytes(b)
                }) as f32
            })),
        }
    }
}

#[derive(Debug, PartialEq)]
struct Header {
    dtype: Dtype,
    fortran_order: bool,
    rows: usize,
    dims: usize,
}

/// Parses the Python-literal dict NumPy writes, e.g.
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }`.
fn parse_header(h: &str) -> Result<Header, String> {
    let value_of = |key: &str| -> Result<&str, String> {
        let at = h
            .find(&format!("'{key}'"))
            .ok_or_else(|| format!("header has no '{key}' entry: {}", h.trim()))?;
        let rest = &h[at + key.len() + 2..];
        let colon = rest
            .find(':')
            .ok_or_else(|| format!("header entry '{key}' has no value"))?;
        Ok(rest[colon + 1..].trim_start())
    };

    let descr = value_of("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or_else(|| "header 'descr' is not a quoted string".to_string())?;
    let dtype = match descr {
        "<f4" => Dtype::F4 { big: false },
        ">f4" => Dtype::F4 { big: true },
        "<f8" => Dtype::F8 { big: false },
        ">f8" => Dtype::F8 { big: true },
        other => return Err(format!("unsupported dtype '{other}' (want '<f4' or '<f8')")),
    };

    let fortran_order = match value_of("fortran_order")? {
        v if v.starts_with("False") => false,
        v if v.starts_with("True") => true,
        _ => return Err("header 'fortran_order' is neither True nor False".into()),
    };

    let shape = value_of("shape")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| "header 'shape' is not a tuple".to_string())?;
    let dims: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| format!("header 'shape' has a bad size '{s}'"))
        })
        .collect::<Result<_, _>>()?;
    let (rows, dims) = match dims[..] {
        [n] => (n, 1),
        [r, d] => (r, d),
        _ => return Err(format!("want a 1-D or 2-D array, shape is ({inner})")),
    };
    Ok(Header {
        dtype,
        fortran_order,
        rows,
        dims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("umbra-kmeans-{}-{name}", std::process::id()))
    }

    #[test]
    fn npy_round_trip() {
        let mut m = Matrix::new(3);
        m.push(&[1.0, -2.5, 3.25]);
        m.push(&[f32::MAX, f32::MIN_POSITIVE, 0.0]);
        let path = temp("round.npy");
        m.write_npy(&path).expect("write");
        let bytes = std::fs::read(&path).expect("read bytes");
        // Preamble plus header fill whole 64-byte blocks, then come 6 values of 4 bytes.
        assert_eq!((bytes.len() - 24) % 64, 0);
        assert_eq!(bytes[bytes.len() - 24 - 1], b'\n');
        let back = Matrix::read_npy(&path).expect("read");
        assert_eq!(back, m);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn npy_empty_round_trip() {
        let m = Matrix::new(5);
        let path = temp("empty.npy");
        m.write_npy(&path).expect("write");
        assert_eq!(Matrix::read_npy(&path).expect("read"), m);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn npy_reads_f8_fortran_and_1d() {
        // float64, Fortran order, shape (2, 3): columns stored one after another.
        let header = "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }";
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        for v in [1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let path = temp("f8.npy");
        std::fs::write(&path, &bytes).expect("write");
        let m = Matrix::read_npy(&path).expect("read");
        assert_eq!((m.rows, m.dims), (2, 3));
        assert_eq!(m.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let _ = std::fs::remove_file(&path);

        let h = parse_header("{'descr': '>f4', 'fortran_order': False, 'shape': (7,), }");
        assert_eq!(
            h,
            Ok(Header {
                dtype: Dtype::F4 { big: true },
                fortran_order: false,
                rows: 7,
                dims: 1
            })
        );
    }

    #[test]
    fn npy_errors_name_the_problem() {
        let path = temp("bad.npy");
        std::fs::write(&path, b"hello world, not numpy").expect("write");
        let e = Matrix::read_npy(&path).expect_err("bad magic");
        assert!(e.to_string().contains("magic"), "{e}");

        let header = "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }";
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        std::fs::write(&path, &bytes).expect("write");
        let e = Matrix::read_npy(&path).expect_err("int dtype");
        assert!(e.to_string().contains("'<i8'"), "{e}");

        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }";
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0u8; 12]);
        std::fs::write(&path, &bytes).expect("write");
        let e = Matrix::read_npy(&path).expect_err("truncated");
        assert!(e.to_string().contains("ends early"), "{e}");
        let _ = std::fs::remove_file(&path);

        let e = Matrix::read_npy(temp("missing.npy")).expect_err("missing");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn try_push_refuses_wrong_lengths() {
        let mut m = Matrix::new(2);
        assert_eq!(m.try_push(&[1.0, 2.0]), Ok(()));
        let e = m.try_push(&[1.0]).expect_err("short row");
        assert_eq!(e.to_string(), "row 1 has 1 values, rows have 2 dims");
        assert_eq!((m.rows, m.data.len()), (1, 2));
    }

    #[test]
    fn from_vec_checks_shape() {
        assert!(Matrix::from_vec(2, 2, vec![0.0; 4]).is_ok());
        let e = Matrix::from_vec(2, 3, vec![0.0; 4]).expect_err("short");
        assert!(e.to_string().contains("2 rows"), "{e}");
    }
}
