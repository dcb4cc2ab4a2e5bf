//! The streaming parser of product import files (JSON lines or CSV): it splits the upload
//! into records as bytes arrive, parses them into import rows, and groups them into
//! all-or-nothing batches for the product service.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use shopmesh_contracts::pb::shopmesh::common::v1::Money;
use shopmesh_contracts::pb::shopmesh::product::v1 as pb;

use crate::dto::non_empty;
use crate::dto::product::{ImportError, ImportReport, NewProductBody};

/// Rows the gateway could not parse, and which batches it therefore kept back.
#[derive(Default, Debug)]
pub struct ImportParse {
    pub errors: Vec<ImportError>,
    /// For every batch sent to the service, its index in the file.
    pub sent: Vec<i32>,
    pub rejected: i32,
}

impl ImportReport {
    /// Merges what the gateway rejected while parsing: the service numbered only the batches it
    /// received, so its batch indices are mapped back to positions in the file.
    pub fn merge_parse(&mut self, parse: ImportParse) {
        for error in &mut self.errors {
            if let Some(original) = usize::try_from(error.batch)
                .ok()
                .and_then(|i| parse.sent.get(i))
            {
                error.batch = *original;
            }
        }
        self.batches_rejected += parse.rejected;
        self.errors.extend(parse.errors);
        self.errors.sort_by_key(|e| (e.batch, e.line));
    }
}

/// Splits a byte stream into CSV records or JSON lines as bytes arrive (a newline inside a
/// quoted CSV field does not end a record).
#[derive(Default)]
struct RecordSplitter {
    buffer: Vec<u8>,
    in_quotes: bool,
    scanned: usize,
    csv: bool,
}

impl RecordSplitter {
    fn push(&mut self, chunk: &[u8], out: &mut Vec<Vec<u8>>) {
        self.buffer.extend_from_slice(chunk);
        let mut start = 0;
        let mut i = self.scanned;
        while i < self.buffer.len() {
            match self.buffer[i] {
                b'"' if self.csv => self.in_quotes = !self.in_quotes,
                b'\n' if !self.in_quotes => {
                    out.push(self.buffer[start..i].to_vec());
                    start = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        self.buffer.drain(..start);
        self.scanned = self.buffer.len();
    }

    fn finish(self) -> Option<Vec<u8>> {
        (!self.buffer.is_empty()).then_some(self.buffer)
    }
}

enum Parsed {
    Row(Box<pb::ImportProductRow>),
    Error(ImportError),
    Skip,
}

struct CsvColumns {
    index: std::collections::HashMap<String, usize>,
}

impl CsvColumns {
    fn get<'a>(&self, record: &'a csv::StringRecord, name: &str) -> Option<&'a str> {
        self.index
            .get(name)
            .and_then(|i| record.get(*i))
            .map(str::trim)
    }
}

fn row_error(line: i64, sku: Option<String>, field: Option<&str>, message: String) -> Parsed {
    Parsed::Error(ImportError {
        batch: 0,
        line,
        sku,
        field: field.map(str::to_owned),
        message,
    })
}

fn parse_json_line(line: i64, bytes: &[u8]) -> Parsed {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Parsed::Skip;
    }
    match serde_json::from_slice::<NewProductBody>(bytes) {
        Ok(body) => {
            let (product, initial_stock, _) = body.input();
            Parsed::Row(Box::new(pb::ImportProductRow {
                row_number: line,
                product: Some(product),
                initial_stock,
            }))
        }
        Err(err) => row_error(line, None, None, format!("invalid JSON line: {err}")),
    }
}

fn parse_csv_record(line: i64, bytes: &[u8], columns: &CsvColumns) -> Parsed {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Parsed::Skip;
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(bytes);
    let record = match reader.records().next() {
        Some(Ok(record)) => record,
        Some(Err(err)) => return row_error(line, None, None, format!("invalid CSV: {err}")),
        None => return Parsed::Skip,
    };
    let sku = columns.get(&record, "sku").unwrap_or("").to_owned();
    let amount = match columns
        .get(&record, "price_amount")
        .unwrap_or("")
        .parse::<i64>()
    {
        Ok(amount) => amount,
        Err(_) => {
            return row_error(
                line,
                non_empty(sku),
                Some("price_amount"),
                "must be a whole number of minor units".into(),
            );
        }
    };
    let active = match columns.get(&record, "active").unwrap_or("") {
        "" | "true" | "1" | "yes" => true,
        "false" | "0" | "no" => false,
        _ => {
            return row_error(
                line,
                non_empty(sku),
                Some("active"),
                "must be true or false".into(),
            );
        }
    };
    let initial_stock = match columns.get(&record, "initial_stock").unwrap_or("") {
        "" => 0,
        text => match text.parse::<i32>() {
            Ok(n) => n,
            Err(_) => {
                return row_error(
                    line,
                    non_empty(sku),
                    Some("initial_stock"),
                    "must be a whole number".into(),
                );
            }
        },
    };
    let image_urls = columns
        .get(&record, "image_urls")
        .unwrap_or("")
        .split('|')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    Parsed::Row(Box::new(pb::ImportProductRow {
        row_number: line,
        product: Some(pb::ProductInput {
            sku,
            name: columns.get(&record, "name").unwrap_or("").to_owned(),
            description: columns.get(&record, "description").unwrap_or("").to_owned(),
            category_id: columns.get(&record, "category_id").unwrap_or("").to_owned(),
            price: Some(Money {
                amount_minor: amount,
                currency: columns.get(&record, "currency").unwrap_or("").to_owned(),
            }),
            image_urls,
            attributes: None,
            active,
        }),
        initial_stock,
    }))
}

fn csv_header(bytes: &[u8]) -> Result<CsvColumns, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(bytes);
    let record = reader
        .records()
        .next()
        .and_then(Result::ok)
        .ok_or("the CSV header row is missing")?;
    let index: std::collections::HashMap<String, usize> = record
        .iter()
        .enumerate()
        .map(|(i, name)| {
            (
                name.trim()
                    .trim_start_matches('\u{feff}')
                    .to_ascii_lowercase(),
                i,
            )
        })
        .collect();
    for required in ["sku", "name", "price_amount", "currency"] {
        if !index.contains_key(required) {
            return Err(format!("the CSV header lacks the column {required}"));
        }
    }
    Ok(CsvColumns { index })
}

/// Turns an uploaded body into batches of import rows as it streams in. A batch with a row
/// that does not parse is kept back whole (all-or-nothing) and reported in the shared
/// [`ImportParse`], read once the stream is exhausted.
pub fn import_rows<S, E>(
    body: S,
    csv: bool,
    batch_rows: usize,
) -> (
    impl Stream<Item = Vec<pb::ImportProductRow>> + Send + 'static,
    Arc<Mutex<ImportParse>>,
)
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let parse = Arc::new(Mutex::new(ImportParse::default()));
    let shared = parse.clone();
    let stream = async_stream::stream! {
        let mut body = body;
        let mut splitter = RecordSplitter { csv, ..RecordSplitter::default() };
        let mut columns: Option<CsvColumns> = None;
        let mut line: i64 = 0;
        let mut next_line: i64 = 1;
        let mut batch: Vec<pb::ImportProductRow> = Vec::new();
        let mut batch_errors: Vec<ImportError> = Vec::new();
        let mut batch_index: i32 = 0;
        let mut done = false;
        while !done {
            let mut records = Vec::new();
            match body.next().await {
                Some(Ok(chunk)) => splitter.push(&chunk, &mut records),
                Some(Err(err)) => {
                    if let Ok(mut p) = shared.lock() {
                        p.errors.push(ImportError { batch: batch_index, line: line + 1, sku: None, field: None, message: format!("the upload broke off: {err}") });
                        p.rejected += 1;
                    }
                    return;
                }
                None => {
                    done = true;
                    if let Some(last) = std::mem::take(&mut splitter).finish() {
                        records.push(last);
                    }
                }
            }
            for record in records {
                // The physical line the record starts on (a quoted CSV field may span lines).
                let starts_on = next_line;
                next_line += 1 + record.iter().filter(|b| **b == b'\n').count() as i64;
                line = starts_on;
                let record = record.strip_suffix(b"\r").map(<[u8]>::to_vec).unwrap_or(record);
                let parsed = if !csv {
                    parse_json_line(line, &record)
                } else if let Some(columns) = &columns {
                    parse_csv_record(line, &record, columns)
                } else {
                    match csv_header(&record) {
                        Ok(header) => columns = Some(header),
                        Err(message) => {
                            if let Ok(mut p) = shared.lock() {
                                p.errors.push(ImportError { batch: 0, line, sku: None, field: None, message });
                                p.rejected += 1;
                            }
                            return;
                        }
                    }
                    Parsed::Skip
                };
                match parsed {
                    Parsed::Row(row) => batch.push(*row),
                    Parsed::Error(mut error) => {
                        error.batch = batch_index;
                        batch_errors.push(error);
                    }
                    Parsed::Skip => continue,
                }
                if batch.len() + batch_errors.len() >= batch_rows {
                    if let Some(rows) = close_batch(&shared, &mut batch, &mut batch_errors, batch_index) {
                        yield rows;
                    }
                    batch_index += 1;
                }
            }
        }
        if (!batch.is_empty() || !batch_errors.is_empty())
            && let Some(rows) = close_batch(&shared, &mut batch, &mut batch_errors, batch_index)
        {
            yield rows;
        }
    };
    (Box::pin(stream), parse)
}

fn close_batch(
    parse: &Mutex<ImportParse>,
    batch: &mut Vec<pb::ImportProductRow>,
    errors: &mut Vec<ImportError>,
    index: i32,
) -> Option<Vec<pb::ImportProductRow>> {
    let rows = std::mem::take(batch);
    let bad = std::mem::take(errors);
    let mut parse = parse.lock().ok()?;
    if bad.is_empty() {
        parse.sent.push(index);
        Some(rows)
    } else {
        parse.errors.extend(bad);
        parse.rejected += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(
        parts: &[&'static str],
    ) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + Unpin + 'static {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p.as_bytes())))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn csv_records_split_across_chunks_and_quoted_newlines() {
        let (rows, parse) = import_rows(
            stream(&[
                "sku,name,price_amount,currency,description\nA-1,Al",
                "pha,100,USD,\"two\nlines\"\nB-2,Beta,oops,USD,x\n",
                "C-3,Gamma,300,USD,y",
            ]),
            true,
            2,
        );
        let batches: Vec<_> = rows.collect().await;
        let parse = parse.lock().unwrap();
        // Batch 0 = A-1 + B-2 (bad) is kept back; batch 1 = C-3 is sent.
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0][0].product.as_ref().unwrap().sku, "C-3");
        assert_eq!(parse.sent, vec![1]);
        assert_eq!(parse.rejected, 1);
        assert_eq!(parse.errors[0].line, 4);
        assert_eq!(parse.errors[0].field.as_deref(), Some("price_amount"));
    }

    #[tokio::test]
    async fn json_lines_parse_and_blank_lines_are_skipped() {
        let (rows, parse) = import_rows(
            stream(&[
                "{\"sku\":\"A-1\",\"name\":\"A\",\"price\":{\"amount\":1,\"currency\":\"USD\"}}\n\n",
                "{\"sku\":\"B-2\",\"name\":\"B\",\"price\":{\"amount\":2,\"currency\":\"USD\"},\"initial_stock\":5}",
            ]),
            false,
            10,
        );
        let batches: Vec<_> = rows.collect().await;
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].len(), 2);
        assert_eq!(batches[0][1].initial_stock, 5);
        assert_eq!(batches[0][1].row_number, 3);
        assert!(parse.lock().unwrap().errors.is_empty());
    }
}
