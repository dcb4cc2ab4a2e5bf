//! Renders the gRPC reference page: one self-contained HTML document (inline CSS, a few lines of
//! inline JS for the filter box, no external assets) generated from the compiled contracts, so a
//! developer calling a service with grpcurl reads the same descriptions, types and policies the
//! servers enforce. Comments come from each file's `source_code_info`; the output is
//! deterministic (packages, services, messages and enums sorted by name; methods, fields and
//! enum values in declaration order; no timestamps).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use prost_reflect::{
    DescriptorPool, EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor,
    MethodDescriptor, ServiceDescriptor, Value,
};

/// Where the services listen by default, for the examples.
const PRODUCT_ADDR: &str = "127.0.0.1:50052";
const USER_ADDR: &str = "127.0.0.1:50051";

/// `write!` into a `String`, which cannot fail.
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}

/// Whether a package is documented: the shopmesh contracts, not their google/grpc imports.
fn documented(package: &str) -> bool {
    package.starts_with("shopmesh.")
}

/// HTML-escapes text for element content and quoted attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The comments attached to one element of a `.proto` file.
#[derive(Default, Clone)]
struct Comment {
    leading: String,
    trailing: String,
    detached: Vec<String>,
}

/// Every comment of every file, by file name and source path.
struct Comments {
    by_path: HashMap<(String, Vec<i32>), Comment>,
    /// Per file: the detached comments that introduce the file rather than one element.
    file_notes: HashMap<String, Vec<String>>,
}

impl Comments {
    fn new(pool: &DescriptorPool) -> Self {
        let mut by_path = HashMap::new();
        let mut file_notes: HashMap<String, Vec<String>> = HashMap::new();
        for file in pool.files() {
            let Some(info) = file.file_descriptor_proto().source_code_info.as_ref() else {
                continue;
            };
            let mut seen_definition = false;
            for location in &info.location {
                let path = &location.path;
                let detached: Vec<String> = location
                    .leading_detached_comments
                    .iter()
                    .filter(|c| !c.trim().is_empty())
                    .cloned()
                    .collect();
                // syntax (12), package (2), imports (3) and options (8) make the file header; the
                // detached comments before the first message/enum/service (4/5/6) introduce the
                // file too. Later detached comments stay with the element that follows them.
                let header = matches!(path.first(), Some(12 | 2 | 3 | 8));
                let definition = path.len() == 2 && matches!(path[0], 4..=6);
                let first_definition = definition && !seen_definition;
                seen_definition |= definition;
                let notes = file_notes.entry(file.name().to_owned()).or_default();
                if header || first_definition {
                    notes.extend(detached.iter().cloned());
                }
                if path.as_slice() == [12] {
                    notes.extend(location.leading_comments.iter().cloned());
                }
                if header && path.as_slice() != [2] {
                    continue;
                }
                let comment = Comment {
                    leading: location.leading_comments.clone().unwrap_or_default(),
                    trailing: location.trailing_comments.clone().unwrap_or_default(),
                    detached: if header || first_definition {
                        Vec::new()
                    } else {
                        detached
                    },
                };
                by_path.insert((file.name().to_owned(), path.clone()), comment);
            }
        }
        Self {
            by_path,
            file_notes,
        }
    }

    fn get(&self, file: &FileDescriptor, path: &[i32]) -> Comment {
        self.by_path
            .get(&(file.name().to_owned(), path.to_vec()))
            .cloned()
            .unwrap_or_default()
    }

    /// The element's leading and trailing comments as HTML, detached notes first.
    fn html(&self, file: &FileDescriptor, path: &[i32]) -> String {
        let comment = self.get(file, path);
        let mut out = String::new();
        for note in &comment.detached {
            w!(out, "<div class=\"note\">{}</div>", prose(note));
        }
        let text = [comment.leading.trim_end(), comment.trailing.trim_end()]
            .iter()
            .filter(|t| !t.trim().is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("\n\n");
        if !text.is_empty() {
            out.push_str(&prose(&text));
        }
        out
    }
}

/// A comment as HTML paragraphs: blank lines separate paragraphs, wrapped lines are joined, a
/// line that starts a list item or is indented keeps its own line, and `code` spans are kept.
fn prose(text: &str) -> String {
    let mut paragraphs: Vec<Vec<String>> = vec![Vec::new()];
    for raw in text.lines() {
        let line = raw.strip_prefix(' ').unwrap_or(raw).trim_end();
        if line.trim().is_empty() {
            if paragraphs.last().is_some_and(|p| !p.is_empty()) {
                paragraphs.push(Vec::new());
            }
            continue;
        }
        if let Some(paragraph) = paragraphs.last_mut() {
            paragraph.push(line.to_owned());
        }
    }
    let mut out = String::new();
    for paragraph in paragraphs.iter().filter(|p| !p.is_empty()) {
        out.push_str("<p>");
        for (index, line) in paragraph.iter().enumerate() {
            let trimmed = line.trim_start();
            let own_line = line.starts_with(' ')
                || trimmed.starts_with("- ")
                || trimmed.starts_with("* ")
                || trimmed
                    .split_once(". ")
                    .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
            if index > 0 {
                out.push_str(if own_line { "<br>" } else { " " });
            }
            out.push_str(&inline_code(&esc(trimmed)));
        }
        out.push_str("</p>");
    }
    out
}

/// Turns `backtick spans` of already escaped text into `<code>`; a lone backtick stays.
fn inline_code(escaped: &str) -> String {
    let mut out = String::new();
    let mut rest = escaped;
    while let Some(start) = rest.find('`') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('`') else {
            break;
        };
        w!(out, "{}<code>{}</code>", &rest[..start], &after[..end]);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// One RPC's `(shopmesh.common.v1.policy)`.
struct Policy {
    /// The Access enum number; 0 (or no policy) means nobody may call it.
    access: i32,
    callers: Vec<String>,
    idempotent: bool,
    long_running: bool,
}

fn policy_of(pool: &DescriptorPool, method: &MethodDescriptor) -> Option<Policy> {
    let extension = pool.get_extension_by_name("shopmesh.common.v1.policy")?;
    let options = method.options();
    if !options.has_extension(&extension) {
        return None;
    }
    let value = options.get_extension(&extension);
    let policy = value.as_message()?;
    let field = |name: &str| policy.get_field_by_name(name);
    let callers = match field("callers").as_deref() {
        Some(Value::List(list)) => list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let flag = |name: &str| field(name).and_then(|v| v.as_bool()).unwrap_or(false);
    Some(Policy {
        access: field("access")
            .and_then(|v| v.as_enum_number())
            .unwrap_or(0),
        callers,
        idempotent: flag("idempotent"),
        long_running: flag("long_running"),
    })
}

/// The enum value name of an access level, e.g. `ACCESS_INTERNAL`.
fn access_name(pool: &DescriptorPool, number: i32) -> String {
    pool.get_enum_by_name("shopmesh.common.v1.Access")
        .and_then(|e| e.get_value(number).map(|v| v.name().to_owned()))
        .unwrap_or_else(|| format!("ACCESS_{number}"))
}

/// Badge class, badge text and a one-line explanation of an access level.
fn access_badge(access: i32) -> (&'static str, &'static str, &'static str) {
    match access {
        1 => (
            "public",
            "public",
            "anyone, with or without a token; a token that is sent must verify",
        ),
        2 => (
            "user",
            "user token",
            "a verified user access token (customer or admin) in the authorization metadata",
        ),
        3 => (
            "admin",
            "admin token",
            "a verified access token of an admin; other users get PERMISSION_DENIED",
        ),
        4 => (
            "internal",
            "internal-only",
            "only the calling services listed below; user tokens alone get PERMISSION_DENIED",
        ),
        _ => (
            "denied",
            "denied",
            "no policy access declared: every caller is refused",
        ),
    }
}

/// How a type is named from `package`: short inside its own package, fully qualified outside.
fn type_name(full_name: &str, package: &str) -> String {
    full_name
        .strip_prefix(package)
        .and_then(|rest| rest.strip_prefix('.'))
        .filter(|_| !package.is_empty())
        .unwrap_or(full_name)
        .to_owned()
}

/// A link to a documented message or enum, plain code for anything else.
fn type_link(full_name: &str, package_of_full_name: &str, from_package: &str) -> String {
    // Types outside the shopmesh packages link to the well-known types table.
    let class = if documented(package_of_full_name) {
        "type"
    } else {
        "type ext"
    };
    format!(
        "<a class=\"{class}\" href=\"#{0}\" title=\"{0}\">{1}</a>",
        esc(full_name),
        esc(&type_name(full_name, from_package))
    )
}

fn message_link(message: &MessageDescriptor, from_package: &str) -> String {
    type_link(message.full_name(), message.package_name(), from_package)
}

fn enum_link(enum_: &EnumDescriptor, from_package: &str) -> String {
    type_link(enum_.full_name(), enum_.package_name(), from_package)
}

fn kind_html(kind: &Kind, from_package: &str) -> String {
    let scalar = match kind {
        Kind::Double => "double",
        Kind::Float => "float",
        Kind::Int32 => "int32",
        Kind::Int64 => "int64",
        Kind::Uint32 => "uint32",
        Kind::Uint64 => "uint64",
        Kind::Sint32 => "sint32",
        Kind::Sint64 => "sint64",
        Kind::Fixed32 => "fixed32",
        Kind::Fixed64 => "fixed64",
        Kind::Sfixed32 => "sfixed32",
        Kind::Sfixed64 => "sfixed64",
        Kind::Bool => "bool",
        Kind::String => "string",
        Kind::Bytes => "bytes",
        Kind::Message(message) => return message_link(message, from_package),
        Kind::Enum(enum_) => return enum_link(enum_, from_package),
    };
    format!("<code class=\"scalar\">{scalar}</code>")
}

/// Type cell and label of a field.
fn field_type(field: &FieldDescriptor, from_package: &str) -> (String, String) {
    if field.is_map()
        && let Kind::Message(entry) = field.kind()
    {
        let key = kind_html(&entry.map_entry_key_field().kind(), from_package);
        let value = kind_html(&entry.map_entry_value_field().kind(), from_package);
        return (
            format!("map&lt;{key}, {value}&gt;"),
            "<span class=\"label\">map</span>".to_owned(),
        );
    }
    let type_html = kind_html(&field.kind(), from_package);
    let label = if field.is_list() {
        "<span class=\"label\">repeated</span>".to_owned()
    } else if let Some(oneof) = field.containing_oneof() {
        if oneof.is_synthetic() {
            "<span class=\"label\">optional</span>".to_owned()
        } else {
            format!(
                "<span class=\"label oneof\">oneof {}</span>",
                esc(oneof.name())
            )
        }
    } else if field.is_required() {
        "<span class=\"label\">required</span>".to_owned()
    } else {
        String::new()
    };
    (type_html, label)
}

/// Everything documented in one package.
#[derive(Default)]
struct Package {
    files: BTreeSet<String>,
    services: BTreeMap<String, ServiceDescriptor>,
    messages: BTreeMap<String, MessageDescriptor>,
    enums: BTreeMap<String, EnumDescriptor>,
}

fn collect(pool: &DescriptorPool) -> BTreeMap<String, Package> {
    let mut packages: BTreeMap<String, Package> = BTreeMap::new();
    for file in pool.files() {
        if documented(file.package_name()) {
            packages
                .entry(file.package_name().to_owned())
                .or_default()
                .files
                .insert(file.name().to_owned());
        }
    }
    for service in pool.services() {
        if let Some(package) = packages.get_mut(service.package_name()) {
            package
                .services
                .insert(service.full_name().to_owned(), service);
        }
    }
    for message in pool.all_messages() {
        if message.is_map_entry() {
            continue;
        }
        if let Some(package) = packages.get_mut(message.package_name()) {
            package
                .messages
                .insert(message.full_name().to_owned(), message);
        }
    }
    for enum_ in pool.all_enums() {
        if let Some(package) = packages.get_mut(enum_.package_name()) {
            package.enums.insert(enum_.full_name().to_owned(), enum_);
        }
    }
    packages
}

/// Name of a message or enum inside its package, e.g. `Outer.Inner`.
fn local_name(full_name: &str, package: &str) -> String {
    type_name(full_name, package)
}

const STYLE: &str = r#"
:root{--fg:#1d232b;--muted:#5b6673;--bg:#fff;--side:#f5f7f9;--line:#dde3e9;--link:#0b5cad;
--code:#f1f4f7;--pub:#1f7a3a;--user:#0b5cad;--admin:#8a4b00;--internal:#b3261e;--denied:#555}
*{box-sizing:border-box}
html{scroll-padding-top:1rem}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);background:var(--bg)}
a{color:var(--link);text-decoration:none}a:hover{text-decoration:underline}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;font-size:.9em}
code{background:var(--code);padding:.05em .3em;border-radius:3px}
pre{background:var(--code);padding:.7em 1em;border-radius:5px;overflow-x:auto;line-height:1.4}
pre code{background:none;padding:0}
.layout{display:flex;align-items:flex-start}
nav{position:sticky;top:0;width:20rem;flex:none;height:100vh;overflow-y:auto;background:var(--side);border-right:1px solid var(--line);padding:1rem;font-size:.9em}
nav ul{list-style:none;margin:0;padding-left:.9rem}nav>ul{padding-left:0}
nav li{margin:.1rem 0}nav .pkg{font-weight:600;margin-top:.6rem}
nav details summary{cursor:pointer;color:var(--muted)}
nav input{width:100%;padding:.35rem .5rem;border:1px solid var(--line);border-radius:4px;font:inherit;margin-bottom:.5rem}
main{flex:1;min-width:0;max-width:64rem;padding:1rem 2rem 4rem}
h1{margin:.3rem 0 .6rem}h2{margin-top:2.5rem;border-bottom:2px solid var(--line);padding-bottom:.2rem}
h3{margin:1.8rem 0 .4rem}h4{margin:0 0 .3rem;font-size:1.05em}
.kw{color:var(--muted);font-weight:400}
.service{border:1px solid var(--line);border-radius:6px;padding:.2rem 1rem 1rem;margin:1.2rem 0}
.method{border-top:1px solid var(--line);padding:.9rem 0 .3rem}
.sig{margin:.2rem 0 .4rem}
.badges{display:flex;flex-wrap:wrap;gap:.35rem;margin:.3rem 0}
.badge{display:inline-block;border:1px solid currentColor;border-radius:999px;padding:0 .55rem;font-size:.8em;font-weight:600;white-space:nowrap}
.badge.public{color:var(--pub)}.badge.user{color:var(--user)}.badge.admin{color:var(--admin)}
.badge.internal{color:#fff;background:var(--internal);border-color:var(--internal)}.badge.denied{color:var(--denied)}
.badge.caller{color:var(--internal);background:#fdecea;border-color:#f3b8b3}
.badge.idem{color:var(--pub)}.badge.noidem{color:var(--muted);font-weight:400}
.badge.long,.badge.stream{color:#5b3fa8}.badge.deprecated{color:var(--denied);text-decoration:line-through}
dl.policy{display:grid;grid-template-columns:max-content 1fr;gap:.1rem .9rem;margin:.4rem 0;font-size:.9em;background:var(--side);padding:.5rem .8rem;border-radius:5px}
dl.policy dt{color:var(--muted)}dl.policy dd{margin:0}
.path{color:var(--muted);font-size:.85em}
table{border-collapse:collapse;width:100%;margin:.4rem 0 1rem;font-size:.92em}
th,td{border-bottom:1px solid var(--line);padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:var(--side);font-weight:600}
td p,.doc p{margin:.15rem 0 .45rem}td p:last-child{margin-bottom:0}
td.num{text-align:right;font-variant-numeric:tabular-nums;width:3.5rem}
.label{font-size:.8em;color:#5b3fa8;font-weight:600}.json{display:block;color:var(--muted);font-size:.8em}
.oneof-note{margin:-.4rem 0 1rem;font-size:.92em}.oneof-note p{margin:.1rem 0}
.note{border-left:3px solid var(--line);padding-left:.8rem;color:var(--muted)}
.muted{color:var(--muted)}.empty{color:var(--muted);font-style:italic}
.files{color:var(--muted);font-size:.85em}
.intro{background:var(--side);border:1px solid var(--line);border-radius:6px;padding:.4rem 1rem}
:target{scroll-margin-top:1rem}section:target>h3,article:target>h4{background:#fff6cc}
@media (max-width:900px){.layout{display:block}nav{position:static;width:auto;height:auto;max-height:50vh}main{padding:1rem}}
"#;

const SCRIPT: &str = r#"
(function(){var box=document.getElementById('filter');if(!box)return;
box.addEventListener('input',function(){var q=box.value.trim().toLowerCase();
var items=document.querySelectorAll('nav li');
for(var i=items.length-1;i>=0;i--){var li=items[i];var own=(li.getAttribute('data-k')||'').toLowerCase();
var child=li.querySelector('li:not([hidden])');li.hidden=!!q&&own.indexOf(q)<0&&!child;
var d=li.querySelector('details');if(d&&q){d.open=!!child;}}});})();
"#;

/// The gRPC reference page of every shopmesh package.
pub fn render(pool: &DescriptorPool) -> String {
    let comments = Comments::new(pool);
    let packages = collect(pool);
    let mut out = String::new();
    out.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>shopmesh gRPC reference</title>\n<style>",
    );
    out.push_str(STYLE);
    out.push_str("</style>\n</head>\n<body>\n<div class=\"layout\">\n");
    render_toc(&mut out, &packages);
    out.push_str("<main>\n");
    render_intro(&mut out, &packages);
    for (name, package) in &packages {
        render_package(&mut out, pool, &comments, name, package);
    }
    render_well_known(&mut out, &packages);
    out.push_str("</main>\n</div>\n<script>");
    out.push_str(SCRIPT);
    out.push_str("</script>\n</body>\n</html>\n");
    out
}

fn render_toc(out: &mut String, packages: &BTreeMap<String, Package>) {
    out.push_str(
        "<nav aria-label=\"Contents\">\n<strong>Contents</strong>\n\
         <input id=\"filter\" type=\"search\" placeholder=\"Filter services, methods, types\" \
         aria-label=\"Filter\">\n<ul>\n<li data-k=\"overview\"><a href=\"#overview\">Overview</a></li>\n",
    );
    for (name, package) in packages {
        w!(
            out,
            "<li class=\"pkg\" data-k=\"{0}\"><a href=\"#pkg-{0}\">{0}</a>\n<ul>\n",
            esc(name)
        );
        for service in package.services.values() {
            w!(
                out,
                "<li data-k=\"{0}\"><a href=\"#{0}\">{1}</a>\n<ul>\n",
                esc(service.full_name()),
                esc(service.name())
            );
            for method in service.methods() {
                w!(
                    out,
                    "<li data-k=\"{0} {1}\"><a href=\"#{0}.{1}\">{1}</a></li>\n",
                    esc(service.full_name()),
                    esc(method.name())
                );
            }
            out.push_str("</ul></li>\n");
        }
        for (kind, names) in [
            ("Messages", package.messages.keys().collect::<Vec<_>>()),
            ("Enums", package.enums.keys().collect::<Vec<_>>()),
        ] {
            if names.is_empty() {
                continue;
            }
            w!(
                out,
                "<li data-k=\"\"><details><summary>{kind} ({})</summary>\n<ul>\n",
                names.len()
            );
            for full_name in names {
                w!(
                    out,
                    "<li data-k=\"{0}\"><a href=\"#{0}\">{1}</a></li>\n",
                    esc(full_name),
                    esc(&local_name(full_name, name))
                );
            }
            out.push_str("</ul></details></li>\n");
        }
        out.push_str("</ul></li>\n");
    }
    if packages.values().any(|p| !p.messages.is_empty()) {
        out.push_str(
            "<li data-k=\"well-known google.protobuf\"><a href=\"#well-known\">Well-known types</a></li>\n",
        );
    }
    out.push_str("</ul>\n</nav>\n");
}

fn render_intro(out: &mut String, packages: &BTreeMap<String, Package>) {
    let services: usize = packages.values().map(|p| p.services.len()).sum();
    let methods: usize = packages
        .values()
        .flat_map(|p| p.services.values())
        .map(|s| s.methods().len())
        .sum();
    let messages: usize = packages.values().map(|p| p.messages.len()).sum();
    let enums: usize = packages.values().map(|p| p.enums.len()).sum();
    w!(
        out,
        "<header id=\"overview\">\n<h1>shopmesh gRPC reference</h1>\n\
         <p class=\"muted\">Generated from the <code>.proto</code> contracts (<code>proto/shopmesh</code>) \
         when the contracts crate is built: {} packages, {services} services, {methods} methods, \
         {messages} messages, {enums} enums. The REST API of the gateway is documented in the \
         <a href=\"/docs\">Swagger UI</a>; its routes call the methods below.</p>\n",
        packages.len()
    );
    w!(
        out,
        "<div class=\"intro\">\n<p>Every service serves gRPC reflection and health, so \
         <code>grpcurl</code> needs no <code>.proto</code> files. \
         Send the caller's access token as the <code>authorization</code> metadata \
         (<code>authorization: Bearer &lt;token&gt;</code>); the caller and its role always come from \
         the verified token, never from a request field. Request bodies are the protobuf JSON form \
         (field names in lowerCamelCase or as written below).</p>\n<pre><code>\
         grpcurl -plaintext {product} list\n\
         grpcurl -plaintext {product} describe shopmesh.product.v1.InventoryService\n\
         grpcurl -plaintext -d '{{\"sku\":\"…\"}}' {product} shopmesh.product.v1.InventoryService/GetStock\n\
         grpcurl -plaintext -H 'authorization: Bearer &lt;token&gt;' {user} shopmesh.user.v1.UserService/GetMe\
         </code></pre>\n\
         <p>Default ports: user service {user}, product service {product}. \
         Each method shows its policy, which the servers enforce:</p>\n<ul>\n\
         <li><span class=\"badge public\">public</span> no token needed (a token that is sent must verify); \
         <span class=\"badge user\">user token</span> any signed-in user; \
         <span class=\"badge admin\">admin token</span> admins only.</li>\n\
         <li><span class=\"badge internal\">internal-only</span> service-to-service: user tokens are refused \
         with <code>PERMISSION_DENIED</code>; the call needs the identity of one of the listed \
         <span class=\"badge caller\">caller</span> services. \
         A caller badge on another access level admits that service in addition to the users it names.</li>\n\
         <li><span class=\"badge idem\">idempotent</span> retry-safe: repeating it has no further effect, \
         so clients retry it after transient failures; methods without it are never retried automatically.</li>\n\
         <li><span class=\"badge long\">long-running</span> a stream that runs under the stream budget \
         instead of the unary deadline; <span class=\"badge stream\">client streaming</span> / \
         <span class=\"badge stream\">server streaming</span> mark streams.</li>\n</ul>\n</div>\n</header>\n",
        product = PRODUCT_ADDR,
        user = USER_ADDR,
    );
}

fn render_package(
    out: &mut String,
    pool: &DescriptorPool,
    comments: &Comments,
    name: &str,
    package: &Package,
) {
    w!(
        out,
        "<section class=\"package\" id=\"pkg-{0}\">\n<h2><span class=\"kw\">package</span> {0}</h2>\n",
        esc(name)
    );
    let files: Vec<String> = package
        .files
        .iter()
        .map(|f| format!("<code>{}</code>", esc(f)))
        .collect();
    w!(
        out,
        "<p class=\"files\">Defined in {}</p>\n",
        files.join(", ")
    );
    for file_name in &package.files {
        let Some(file) = pool.get_file_by_name(file_name) else {
            continue;
        };
        let mut doc = String::new();
        if let Some(notes) = comments.file_notes.get(file_name) {
            for note in notes {
                doc.push_str(&prose(note));
            }
        }
        doc.push_str(&comments.html(&file, &[2]));
        if !doc.is_empty() {
            w!(out, "<div class=\"doc\">{doc}</div>\n");
        }
    }
    if package.services.is_empty() {
        out.push_str(
            "<p class=\"muted\">This package defines no service, only messages and enums.</p>\n",
        );
    }
    for service in package.services.values() {
        render_service(out, pool, comments, service);
    }
    if !package.messages.is_empty() {
        w!(out, "<h3 class=\"group\">Messages of {}</h3>\n", esc(name));
        for message in package.messages.values() {
            render_message(out, comments, name, message);
        }
    }
    if !package.enums.is_empty() {
        w!(out, "<h3 class=\"group\">Enums of {}</h3>\n", esc(name));
        for enum_ in package.enums.values() {
            render_enum(out, comments, name, enum_);
        }
    }
    out.push_str("</section>\n");
}

fn render_service(
    out: &mut String,
    pool: &DescriptorPool,
    comments: &Comments,
    service: &ServiceDescriptor,
) {
    let file = service.parent_file();
    let package = service.package_name();
    w!(
        out,
        "<section class=\"service\" id=\"{0}\">\n<h3><span class=\"kw\">service</span> {1}</h3>\n\
         <p class=\"path\"><code>{0}</code></p>\n",
        esc(service.full_name()),
        esc(service.name())
    );
    let doc = comments.html(&file, service.path());
    if !doc.is_empty() {
        w!(out, "<div class=\"doc\">{doc}</div>\n");
    }
    if service_deprecated(service) {
        out.push_str("<p><span class=\"badge deprecated\">deprecated</span></p>\n");
    }
    w!(
        out,
        "<pre><code>grpcurl -plaintext &lt;host:port&gt; describe {}</code></pre>\n",
        esc(service.full_name())
    );
    for method in service.methods() {
        render_method(out, pool, comments, package, &method);
    }
    out.push_str("</section>\n");
}

fn service_deprecated(service: &ServiceDescriptor) -> bool {
    service
        .service_descriptor_proto()
        .options
        .as_ref()
        .and_then(|o| o.deprecated)
        .unwrap_or(false)
}

fn render_method(
    out: &mut String,
    pool: &DescriptorPool,
    comments: &Comments,
    package: &str,
    method: &MethodDescriptor,
) {
    let service = method.parent_service();
    let file = method.parent_file();
    let grpc_path = format!("/{}/{}", service.full_name(), method.name());
    w!(
        out,
        "<article class=\"method\" id=\"{}.{}\">\n<h4>{}</h4>\n",
        esc(service.full_name()),
        esc(method.name()),
        esc(method.name())
    );
    let stream = |yes: bool| {
        if yes {
            "<span class=\"kw\">stream</span> "
        } else {
            ""
        }
    };
    w!(
        out,
        "<div class=\"sig mono\"><span class=\"kw\">rpc</span> {}({}{}) <span class=\"kw\">returns</span> ({}{})</div>\n",
        esc(method.name()),
        stream(method.is_client_streaming()),
        message_link(&method.input(), package),
        stream(method.is_server_streaming()),
        message_link(&method.output(), package),
    );

    let policy = policy_of(pool, method);
    let access = policy.as_ref().map_or(0, |p| p.access);
    let (class, badge, meaning) = access_badge(access);
    out.push_str("<div class=\"badges\">");
    w!(out, "<span class=\"badge {class}\">{badge}</span>");
    if let Some(policy) = &policy {
        for caller in &policy.callers {
            w!(
                out,
                "<span class=\"badge caller\" title=\"admitted calling service\">caller: {}</span>",
                esc(caller)
            );
        }
        if policy.idempotent {
            out.push_str("<span class=\"badge idem\">idempotent · retry-safe</span>");
        } else {
            out.push_str("<span class=\"badge noidem\">not idempotent</span>");
        }
        if policy.long_running {
            out.push_str("<span class=\"badge long\">long-running</span>");
        }
    }
    if method.is_client_streaming() {
        out.push_str("<span class=\"badge stream\">client streaming</span>");
    }
    if method.is_server_streaming() {
        out.push_str("<span class=\"badge stream\">server streaming</span>");
    }
    let deprecated = method
        .method_descriptor_proto()
        .options
        .as_ref()
        .and_then(|o| o.deprecated)
        .unwrap_or(false);
    if deprecated {
        out.push_str("<span class=\"badge deprecated\">deprecated</span>");
    }
    out.push_str("</div>\n");

    let doc = comments.html(&file, method.path());
    if doc.is_empty() {
        out.push_str("<p class=\"empty\">No description.</p>\n");
    } else {
        w!(out, "<div class=\"doc\">{doc}</div>\n");
    }

    out.push_str("<dl class=\"policy\">");
    w!(
        out,
        "<dt>Access</dt><dd><code>{}</code> — {}</dd>",
        esc(&access_name(pool, access)),
        esc(meaning)
    );
    let callers = policy.as_ref().map(|p| p.callers.as_slice()).unwrap_or(&[]);
    let callers_html = if callers.is_empty() {
        "none".to_owned()
    } else {
        callers
            .iter()
            .map(|c| format!("<code>{}</code>", esc(c)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let callers_note = match (access, callers.is_empty()) {
        (4, true) => " (no service may call it)",
        (4, false) => " (the only callers admitted)",
        (_, false) => " (admitted besides the users above)",
        _ => "",
    };
    w!(
        out,
        "<dt>Calling services</dt><dd>{callers_html}{callers_note}</dd>"
    );
    let idempotent = policy.as_ref().is_some_and(|p| p.idempotent);
    w!(
        out,
        "<dt>Idempotent</dt><dd>{}</dd>",
        if idempotent {
            "yes — retry-safe; clients retry it after transient failures"
        } else {
            "no — not retried automatically"
        }
    );
    let long_running = policy.as_ref().is_some_and(|p| p.long_running);
    w!(
        out,
        "<dt>Long-running</dt><dd>{}</dd>",
        if long_running {
            "yes — runs under the stream budget, not the unary deadline"
        } else {
            "no — unary deadline"
        }
    );
    w!(
        out,
        "<dt>gRPC path</dt><dd><code>{}</code></dd>",
        esc(&grpc_path)
    );
    out.push_str("</dl>\n</article>\n");
}

fn render_message(
    out: &mut String,
    comments: &Comments,
    package: &str,
    message: &MessageDescriptor,
) {
    let file = message.parent_file();
    w!(
        out,
        "<section class=\"message\" id=\"{0}\">\n<h3><span class=\"kw\">message</span> {1}</h3>\n",
        esc(message.full_name()),
        esc(&local_name(message.full_name(), package))
    );
    let doc = comments.html(&file, message.path());
    if !doc.is_empty() {
        w!(out, "<div class=\"doc\">{doc}</div>\n");
    }
    let fields: Vec<FieldDescriptor> = message.fields().collect();
    if fields.is_empty() {
        out.push_str("<p class=\"empty\">No fields.</p>\n");
    } else {
        out.push_str(
            "<table>\n<thead><tr><th>Field</th><th class=\"num\">#</th><th>Type</th><th>Label</th>\
             <th>Description</th></tr></thead>\n<tbody>\n",
        );
        for field in fields {
            let (type_html, label) = field_type(&field, package);
            let json = if field.json_name() != field.name() {
                format!(
                    "<span class=\"json\">JSON: {}</span>",
                    esc(field.json_name())
                )
            } else {
                String::new()
            };
            let deprecated = field
                .field_descriptor_proto()
                .options
                .as_ref()
                .and_then(|o| o.deprecated)
                .unwrap_or(false);
            let mut description = comments.html(&file, field.path());
            if deprecated {
                description.insert_str(0, "<span class=\"badge deprecated\">deprecated</span> ");
            }
            w!(
                out,
                "<tr id=\"{}.{}\"><td><code>{}</code>{json}</td><td class=\"num\">{}</td><td>{type_html}</td>\
                 <td>{label}</td><td>{description}</td></tr>\n",
                esc(message.full_name()),
                esc(field.name()),
                esc(field.name()),
                field.number(),
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }
    for oneof in message.oneofs().filter(|o| !o.is_synthetic()) {
        let members: Vec<String> = oneof
            .fields()
            .map(|f| format!("<code>{}</code>", esc(f.name())))
            .collect();
        w!(
            out,
            "<div class=\"oneof-note\"><p><span class=\"label oneof\">oneof {}</span> at most one of \
             {} is set.</p>{}</div>\n",
            esc(oneof.name()),
            members.join(", "),
            comments.html(&file, oneof.path())
        );
    }
    let reserved: Vec<String> = message
        .reserved_ranges()
        .map(|r| {
            if r.end == r.start + 1 {
                r.start.to_string()
            } else {
                format!("{} to {}", r.start, r.end - 1)
            }
        })
        .chain(message.reserved_names().map(|n| format!("\"{n}\"")))
        .collect();
    if !reserved.is_empty() {
        w!(
            out,
            "<p class=\"muted\">Reserved: {}</p>\n",
            esc(&reserved.join(", "))
        );
    }
    out.push_str("</section>\n");
}

fn render_enum(out: &mut String, comments: &Comments, package: &str, enum_: &EnumDescriptor) {
    let file = enum_.parent_file();
    w!(
        out,
        "<section class=\"enum\" id=\"{0}\">\n<h3><span class=\"kw\">enum</span> {1}</h3>\n",
        esc(enum_.full_name()),
        esc(&local_name(enum_.full_name(), package))
    );
    let doc = comments.html(&file, enum_.path());
    if !doc.is_empty() {
        w!(out, "<div class=\"doc\">{doc}</div>\n");
    }
    out.push_str(
        "<table>\n<thead><tr><th>Value</th><th class=\"num\">Number</th><th>Description</th></tr></thead>\n<tbody>\n",
    );
    for value in enum_.values() {
        let description = comments.html(&file, value.path());
        w!(
            out,
            "<tr id=\"{}\"><td><code>{}</code></td><td class=\"num\">{}</td><td>{description}</td></tr>\n",
            esc(value.full_name()),
            esc(value.name()),
            value.number()
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

/// The google.protobuf types the contracts use, with their JSON form for grpcurl `-d`.
fn render_well_known(out: &mut String, packages: &BTreeMap<String, Package>) {
    let mut used = BTreeSet::new();
    for package in packages.values() {
        for message in package.messages.values() {
            for field in message.fields() {
                let mut kinds = vec![field.kind()];
                if field.is_map()
                    && let Kind::Message(entry) = field.kind()
                {
                    kinds = vec![
                        entry.map_entry_key_field().kind(),
                        entry.map_entry_value_field().kind(),
                    ];
                }
                for kind in kinds {
                    if let Kind::Message(m) = kind
                        && !documented(m.package_name())
                    {
                        used.insert(m.full_name().to_owned());
                    }
                }
            }
        }
        for service in package.services.values() {
            for method in service.methods() {
                for m in [method.input(), method.output()] {
                    if !documented(m.package_name()) {
                        used.insert(m.full_name().to_owned());
                    }
                }
            }
        }
    }
    if used.is_empty() {
        return;
    }
    out.push_str(
        "<section id=\"well-known\">\n<h2>Well-known types</h2>\n\
         <p>Standard protobuf types used by the contracts, with their JSON form (as grpcurl reads and prints it).</p>\n\
         <table>\n<thead><tr><th>Type</th><th>JSON form</th></tr></thead>\n<tbody>\n",
    );
    for name in used {
        let json = match name.as_str() {
            "google.protobuf.Timestamp" => "RFC 3339 string in UTC, e.g. \"2024-05-01T12:00:00Z\"",
            "google.protobuf.Duration" => "seconds with an \"s\" suffix, e.g. \"900s\" or \"1.5s\"",
            "google.protobuf.FieldMask" => {
                "comma-separated lowerCamelCase field paths, e.g. \"name,price\""
            }
            "google.protobuf.Struct" => "any JSON object",
            "google.protobuf.Value" => "any JSON value",
            "google.protobuf.ListValue" => "a JSON array",
            "google.protobuf.Any" => {
                "an object with \"@type\": \"type.googleapis.com/<full message name>\" and the message's fields"
            }
            "google.protobuf.Empty" => "{}",
            n if n.ends_with("Value") && n.starts_with("google.protobuf.") => {
                "the wrapped value, or null"
            }
            _ => "see the protobuf JSON mapping",
        };
        w!(
            out,
            "<tr id=\"{0}\"><td><code>{0}</code></td><td>{1}</td></tr>\n",
            esc(&name),
            esc(json)
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}
