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

/// The longest row (CSV record or JSON line) the gateway accepts, in bytes. A longer row is
/// reported as that row's error (its batch is rejected) and never buffered whole.
pub const MAX_ROW_BYTES: usize = 64 * 1024;

/// The most characters of a row's own text (its SKU, say) that a report echoes.
pub const MAX_ECHO_CHARS: usize = 200;

/// The most bytes one batch may take on the wire: well under the 4 MiB gRPC message limit of
/// the product service, so a batch of large rows is closed early rather than refused whole.
pub const MAX_BATCH_BYTES: usize = 3 * 1024 * 1024;

/// What is kept of an over-long row: enough to name its SKU in the report.
const KEPT_OF_LONG_ROW: usize = 4 * 1024;

/// `text` cut to [`MAX_ECHO_CHARS`] characters, marked with an ellipsis when cut.
pub fn excerpt(text: &str) -> String {
    match text.char_indices().nth(MAX_ECHO_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

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
        // Whatever a row held, the report echoes only a bounded excerpt of it.
        for error in &mut self.errors {
            error.sku = error.sku.as_deref().map(excerpt);
            error.field = error.field.as_deref().map(excerpt);
            error.message = excerpt(&error.message);
        }
    }
}

/// One record as split off the upload.
struct Record {
    /// The record's bytes; only the first [`KEPT_OF_LONG_ROW`] when it is too long.
    bytes: Vec<u8>,
    /// Newlines inside the record (in quoted CSV fields), for numbering the lines after it.
    newlines: i64,
    /// Longer than [`MAX_ROW_BYTES`].
    too_long: bool,
    /// The upload ended inside a quoted CSV field.
    unterminated: bool,
}

/// Splits a byte stream into CSV records or JSON lines as bytes arrive (a newline inside a
/// quoted CSV field does not end a record). It never holds more than [`MAX_ROW_BYTES`] of one
/// record: the rest of a longer one is only scanned for its end.
#[derive(Default)]
struct RecordSplitter {
    current: Vec<u8>,
    newlines: i64,
    too_long: bool,
    in_quotes: bool,
    csv: bool,
}

impl RecordSplitter {
    fn push(&mut self, chunk: &[u8], out: &mut Vec<Record>) {
        let mut rest = chunk;
        loop {
            let mut end = None;
            for (i, byte) in rest.iter().enumerate() {
                match byte {
                    b'"' if self.csv => self.in_quotes = !self.in_quotes,
                    b'\n' if !self.in_quotes => {
                        end = Some(i);
                        break;
                    }
                    b'\n' => self.newlines += 1,
                    _ => {}
                }
            }
            match end {
                Some(i) => {
                    self.keep(&rest[..i]);
                    out.push(self.take(false));
                    rest = &rest[i + 1..];
                }
                None => {
                    self.keep(rest);
                    return;
                }
            }
        }
    }

    fn keep(&mut self, part: &[u8]) {
        if self.too_long {
            return;
        }
        if self.current.len() + part.len() > MAX_ROW_BYTES {
            self.too_long = true;
            self.current
                .extend_from_slice(&part[..part.len().min(KEPT_OF_LONG_ROW)]);
            self.current.truncate(KEPT_OF_LONG_ROW);
        } else {
            self.current.extend_from_slice(part);
        }
    }

    fn take(&mut self, unterminated: bool) -> Record {
        Record {
            bytes: std::mem::take(&mut self.current),
            newlines: std::mem::take(&mut self.newlines),
            too_long: std::mem::take(&mut self.too_long),
            unterminated,
        }
    }

    fn finish(mut self) -> Option<Record> {
        let unterminated = self.csv && self.in_quotes;
        (!self.current.is_empty() || self.too_long).then(|| self.take(unterminated))
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

/// A SKU longer than any excerpt is refused here: the product service would refuse it anyway,
/// and it would echo it whole.
fn overlong_sku(line: i64, sku: &str) -> Option<Parsed> {
    (sku.trim().chars().count() > MAX_ECHO_CHARS).then(|| {
        row_error(
            line,
            Some(excerpt(sku.trim())),
            Some("sku"),
            format!("is longer than {MAX_ECHO_CHARS} characters"),
        )
    })
}

/// The error of a row that is too long or ends inside a quoted field; what the splitter kept
/// of it is enough to name its SKU in CSV.
fn broken_record(line: i64, record: &Record, columns: Option<&CsvColumns>) -> Parsed {
    let sku = columns.and_then(|columns| {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(record.bytes.as_slice());
        let row = reader.records().next()?.ok()?;
        non_empty(excerpt(columns.get(&row, "sku")?))
    });
    let message = match (record.too_long, record.unterminated) {
        (true, true) => {
            format!("row is longer than {MAX_ROW_BYTES} bytes (a quoted field is never closed)")
        }
        (true, false) => format!("row is longer than {MAX_ROW_BYTES} bytes"),
        _ => "a quoted field is never closed".to_owned(),
    };
    row_error(line, sku, None, message)
}

/// An upper bound on the encoded size of a protobuf field: a tag, a length, the payload.
fn field_bound(payload: usize) -> usize {
    6 + payload
}

fn value_bound(value: &prost_types::Value) -> usize {
    use prost_types::value::Kind;
    match &value.kind {
        None => 0,
        Some(Kind::NullValue(_) | Kind::BoolValue(_) | Kind::NumberValue(_)) => 11,
        Some(Kind::StringValue(text)) => field_bound(text.len()),
        Some(Kind::ListValue(list)) => field_bound(
            list.values
                .iter()
                .map(|v| field_bound(value_bound(v)))
                .sum(),
        ),
        Some(Kind::StructValue(fields)) => field_bound(struct_bound(fields)),
    }
}

fn struct_bound(value: &prost_types::Struct) -> usize {
    value
        .fields
        .iter()
        .map(|(key, value)| field_bound(field_bound(key.len()) + field_bound(value_bound(value))))
        .sum()
}

/// An upper bound on the bytes a row adds to its batch message.
fn row_bound(row: &pb::ImportProductRow) -> usize {
    let product = row.product.as_ref().map_or(0, |product| {
        let pb::ProductInput {
            sku,
            name,
            description,
            category_id,
            price,
            image_urls,
            attributes,
            active: _,
        } = product;
        [sku, name, description, category_id]
            .iter()
            .map(|text| field_bound(text.len()))
            .sum::<usize>()
            + field_bound(11 + field_bound(price.as_ref().map_or(0, |m| m.currency.len())))
            + image_urls
                .iter()
                .map(|u| field_bound(u.len()))
                .sum::<usize>()
            + attributes
                .as_ref()
                .map_or(0, |a| field_bound(struct_bound(a)))
            + 11
    });
    field_bound(22 + field_bound(product))
}

fn parse_json_line(line: i64, bytes: &[u8]) -> Parsed {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Parsed::Skip;
    }
    // Deeper documents than any body may be would not even decode in the product service.
    if let Some(field) = crate::extract::too_deep(bytes, crate::extract::MAX_JSON_DEPTH) {
        return row_error(
            line,
            None,
            Some(field.as_deref().unwrap_or("row")),
            format!(
                "must be nested at most {} levels deep",
                crate::extract::MAX_JSON_DEPTH
            ),
        );
    }
    match serde_json::from_slice::<NewProductBody>(bytes) {
        Ok(body) => {
            let (product, initial_stock, _) = body.input();
            if let Some(error) = overlong_sku(line, &product.sku) {
                return error;
            }
            Parsed::Row(Box::new(pb::ImportProductRow {
                row_number: line,
                product: Some(product),
                initial_stock,
            }))
        }
        // The parser's own text is not passed on: the report speaks the API's words.
        Err(err) => {
            let problem = match err.classify() {
                serde_json::error::Category::Data => {
                    "is not a product (a field is missing, unknown or of the wrong type)"
                }
                _ => "is not well-formed JSON",
            };
            row_error(
                line,
                None,
                None,
                format!("invalid JSON line: {problem} (column {})", err.column()),
            )
        }
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
        Some(Err(err)) => {
            let message = match err.kind() {
                csv::ErrorKind::Utf8 { .. } => "invalid CSV: the row is not valid UTF-8",
                _ => "invalid CSV: the row cannot be read",
            };
            return row_error(line, None, None, message.into());
        }
        None => return Parsed::Skip,
    };
    let sku = columns.get(&record, "sku").unwrap_or("").to_owned();
    if let Some(error) = overlong_sku(line, &sku) {
        return error;
    }
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
        let mut batch_bytes: usize = 0;
        let mut done = false;
        while !done {
            let mut records = Vec::new();
            match body.next().await {
                Some(Ok(chunk)) => splitter.push(&chunk, &mut records),
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "import upload broke off");
                    if let Ok(mut p) = shared.lock() {
                        p.errors.push(ImportError { batch: batch_index, line: line + 1, sku: None, field: None, message: "the upload broke off".to_owned() });
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
                next_line += 1 + record.newlines;
                line = starts_on;
                let header = csv && columns.is_none();
                let parsed = if (record.too_long || record.unterminated) && !header {
                    broken_record(line, &record, columns.as_ref())
                } else if record.too_long {
                    if let Ok(mut p) = shared.lock() {
                        p.errors.push(ImportError { batch: 0, line, sku: None, field: None, message: format!("the CSV header row is longer than {MAX_ROW_BYTES} bytes") });
                        p.rejected += 1;
                    }
                    return;
                } else {
                    let bytes = record.bytes.strip_suffix(b"\r").unwrap_or(&record.bytes);
                    if !csv {
                        parse_json_line(line, bytes)
                    } else if let Some(columns) = &columns {
                        parse_csv_record(line, bytes, columns)
                    } else {
                        match csv_header(bytes) {
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
                    }
                };
                match parsed {
                    Parsed::Row(row) => {
                        // A batch of large rows is closed early, so that no batch message is
                        // larger than the product service accepts.
                        let bytes = row_bound(&row);
                        if batch_bytes + bytes > MAX_BATCH_BYTES
                            && (!batch.is_empty() || !batch_errors.is_empty())
                        {
                            if let Some(rows) = close_batch(&shared, &mut batch, &mut batch_errors, batch_index) {
                                yield rows;
                            }
                            batch_index += 1;
                            batch_bytes = 0;
                        }
                        batch_bytes += bytes;
                        batch.push(*row);
                    }
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
                    batch_bytes = 0;
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

    #[tokio::test]
    async fn an_overlong_record_is_its_rows_error_and_later_lines_keep_their_numbers() {
        let long = format!(
            "L-1,\"{}\n{}\",100,USD\n",
            "x".repeat(MAX_ROW_BYTES),
            "y".repeat(10)
        );
        let parts: Vec<Result<Bytes, std::convert::Infallible>> = [
            "sku,name,price_amount,currency\nA-1,Alpha,100,USD\n".to_owned(),
            long[..1000].to_owned(),
            long[1000..].to_owned(),
            "B-2,Beta,200,USD\n".to_owned(),
        ]
        .into_iter()
        .map(|p| Ok(Bytes::from(p)))
        .collect();
        let (rows, parse) = import_rows(futures::stream::iter(parts), true, 2);
        let batches: Vec<_> = rows.collect().await;
        let parse = parse.lock().unwrap();
        // Batch 0 = A-1 + the long row (rejected); batch 1 = B-2, on line 5.
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0][0].row_number, 5);
        assert_eq!(parse.sent, vec![1]);
        assert_eq!(parse.errors.len(), 1);
        assert_eq!(parse.errors[0].line, 3);
        assert_eq!(parse.errors[0].sku.as_deref(), Some("L-1"));
        assert_eq!(parse.errors[0].message, "row is longer than 65536 bytes");
    }

    #[test]
    fn excerpts_cut_on_character_boundaries() {
        assert_eq!(excerpt("short"), "short");
        let cut = excerpt(&"é".repeat(MAX_ECHO_CHARS + 5));
        assert_eq!(cut.chars().count(), MAX_ECHO_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
