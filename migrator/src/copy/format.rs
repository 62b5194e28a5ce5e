//! The COPY data format of a table (binary or text) and counting the rows of COPY output.

use crate::plan::ResolvedTable;

/// The COPY format of a table's data: binary when every column's binary form is portable between
/// databases (see [`crate::plan::ResolvedColumn::binary_portable`]), text otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    Text,
    Binary,
}

impl CopyFormat {
    pub fn for_table(table: &ResolvedTable) -> CopyFormat {
        if table.columns.iter().all(|c| c.binary_portable) {
            CopyFormat::Binary
        } else {
            CopyFormat::Text
        }
    }

    /// The `COPY … (FORMAT …)` option of this format (empty for the default, text).
    pub fn option(self) -> &'static str {
        match self {
            CopyFormat::Text => "",
            CopyFormat::Binary => " (FORMAT binary)",
        }
    }

    /// Number of rows in COPY output of this format.
    pub fn count_rows(self, data: &[u8]) -> anyhow::Result<u64> {
        match self {
            // Text COPY escapes newlines inside values, so every raw newline ends a row.
            CopyFormat::Text => Ok(data.iter().filter(|b| **b == b'\n').count() as u64),
            CopyFormat::Binary => {
                binary_row_count(data).ok_or_else(|| anyhow::anyhow!("malformed binary COPY data"))
            }
        }
    }
}

/// Walks binary COPY data (header, tuples, trailer) and counts the tuples.
fn binary_row_count(data: &[u8]) -> Option<u64> {
    const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
    let be32 = |at: usize| -> Option<i32> {
        Some(i32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
    };
    if data.get(..SIGNATURE.len())? != SIGNATURE {
        return None;
    }
    let extension = usize::try_from(be32(15)?).ok()?;
    let mut pos = 19 + extension;
    let mut rows = 0u64;
    loop {
        let fields = i16::from_be_bytes(data.get(pos..pos + 2)?.try_into().ok()?);
        pos += 2;
        if fields == -1 {
            return (pos == data.len()).then_some(rows);
        }
        for _ in 0..fields {
            let len = be32(pos)?;
            pos += 4;
            if len > 0 {
                pos += usize::try_from(len).ok()?;
            }
        }
        rows += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_rows_are_counted_and_malformed_data_refused() {
        let mut data = b"PGCOPY\n\xff\r\n\0".to_vec();
        data.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // flags, extension length
        for value in [&b"ab"[..], &b""[..]] {
            data.extend_from_slice(&2i16.to_be_bytes());
            data.extend_from_slice(&(value.len() as i32).to_be_bytes());
            data.extend_from_slice(value);
            data.extend_from_slice(&(-1i32).to_be_bytes()); // NULL
        }
        data.extend_from_slice(&(-1i16).to_be_bytes());
        assert_eq!(binary_row_count(&data), Some(2));
        assert_eq!(binary_row_count(&data[..data.len() - 3]), None);
        assert_eq!(CopyFormat::Text.count_rows(b"a\tb\nc\\nd\te\n").unwrap(), 2);
    }
}
