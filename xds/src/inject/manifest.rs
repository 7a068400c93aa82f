//! Multi-document manifests (`skiff-xds inject -f`): splits the YAML stream at its `---`
//! lines, injects each workload (and each item of a `kind: List`), and writes the stream back.
//! A document that is not changed comes out byte for byte as it went in, comments included;
//! a changed one is re-emitted with its keys in their order, keeping the comment lines above it.

use std::fmt;

use super::{
    error::InjectError,
    pod::Report,
    settings::Settings,
    value::Value,
    workload::{self, describe},
};

/// Where in the stream an object is: its document (1-based, blank documents not counted)
/// and, inside a `kind: List`, its item (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub document: usize,
    pub item: Option<usize>,
    /// `Deployment shop/web`; `None` when the document did not parse.
    pub object: Option<String>,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(item) = self.item {
            write!(f, ", item {item}")?;
        }
        if let Some(object) = &self.object {
            write!(f, " ({object})")?;
        }
        Ok(())
    }
}

/// Why a manifest stream was refused: one problem of one object.
#[derive(Clone, Debug, PartialEq)]
pub struct ManifestError {
    pub place: Place,
    pub problem: Problem,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Problem {
    /// The document is not YAML (the parser's message, with the line in the whole stream).
    Yaml(String),
    Inject(InjectError),
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            Problem::Yaml(m) => write!(f, "{}: not YAML: {m}", self.place),
            Problem::Inject(e) => write!(f, "{}: {e}", self.place),
        }
    }
}

/// Something the user should know about an object that was accepted.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    pub place: Place,
    pub text: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place, self.text)
    }
}

/// The injected stream, and a note per skipped pod and per warning.
#[derive(Clone, Debug, PartialEq)]
pub struct Injected {
    pub text: String,
    pub notes: Vec<Note>,
}

/// Injects every workload of a multi-document YAML (or JSON) stream. All problems of all
/// documents are reported; nothing is written when there is one.
pub fn inject(input: &str, settings: &Settings) -> Result<Injected, Vec<ManifestError>> {
    let mut out = String::with_capacity(input.len() * 2);
    let mut notes = Vec::new();
    let mut errors = Vec::new();
    let mut document = 0;
    for seg in segments(input) {
        if seg.is_blank() {
            out.push_str(seg.text);
            continue;
        }
        document += 1;
        let at = |item, object| Place {
            document,
            item,
            object,
        };
        // Leading newlines keep the parser's line numbers those of the whole stream.
        let padded = format!("{}{}", "\n".repeat(seg.first_line), seg.text);
        // Octal as kubectl reads YAML 1.1 (`0644`). The default budget stays: its nesting
        // limit (64) keeps the parser within a 2 MiB thread stack.
        let options = serde_saphyr::options! { legacy_octal_numbers: true };
        let mut value: Value = match serde_saphyr::from_str_with_options(&padded, options) {
            Ok(v) => v,
            Err(e) => {
                errors.push(ManifestError {
                    place: at(None, None),
                    problem: Problem::Yaml(e.to_string()),
                });
                continue;
            }
        };
        let mut changed = false;
        let mut one = |obj: &mut Value, item: Option<usize>| {
            let place = at(item, Some(describe(obj)));
            match workload::inject(obj, settings) {
                None => {}
                Some(Ok(report)) => {
                    changed |= report.skipped.is_none();
                    notes.extend(report_notes(&place, report));
                }
                Some(Err(e)) => errors.extend(e.into_iter().map(|e| ManifestError {
                    place: place.clone(),
                    problem: Problem::Inject(e),
                })),
            }
        };
        if is_list(&value) {
            if let Some(Value::Seq(items)) = value.as_map_mut().and_then(|m| m.get_mut("items")) {
                for (i, obj) in items.iter_mut().enumerate() {
                    one(obj, Some(i + 1));
                }
            }
        } else {
            one(&mut value, None);
        }
        if !changed {
            out.push_str(seg.text);
            continue;
        }
        match serde_saphyr::to_string(&value) {
            Ok(yaml) => {
                out.push_str(seg.marker_out());
                out.push_str(seg.header);
                out.push_str(&yaml);
                out.push_str(seg.end);
            }
            Err(e) => errors.push(ManifestError {
                place: at(None, Some(describe(&value))),
                problem: Problem::Yaml(format!("writing it back: {e}")),
            }),
        }
    }
    if errors.is_empty() {
        Ok(Injected { text: out, notes })
    } else {
        Err(errors)
    }
}

fn report_notes(place: &Place, report: Report) -> impl Iterator<Item = Note> + '_ {
    let skipped = report.skipped.map(|s| format!("not injected: {s}"));
    skipped
        .into_iter()
        .chain(report.warnings.into_iter().map(|w| format!("warning: {w}")))
        .map(|text| Note {
            place: place.clone(),
            text,
        })
}

fn is_list(v: &Value) -> bool {
    v.get("kind").and_then(Value::as_str) == Some("List")
        && v.get("apiVersion").and_then(Value::as_str) == Some("v1")
}

/// One document of the stream, as written: its `---` line (if any), the comment and blank
/// lines that open it, the rest, and its `...` line (if any).
#[derive(Debug, PartialEq)]
struct Segment<'a> {
    /// All of it, from the `---` line to the `...` line.
    text: &'a str,
    marker: &'a str,
    header: &'a str,
    body: &'a str,
    end: &'a str,
    /// 0-based line of `text` in the stream.
    first_line: usize,
}

impl Segment<'_> {
    /// Only comments and blank lines: passed through, not counted as a document.
    fn is_blank(&self) -> bool {
        self.body.is_empty() && is_blank_line(marker_rest(self.marker))
    }

    /// The `---` line to write before the re-emitted document: as written when it holds
    /// nothing else (a comment at most), else a bare one.
    fn marker_out(&self) -> &str {
        match self.marker {
            "" => "",
            m if is_blank_line(marker_rest(m)) => m,
            _ => "---\n",
        }
    }
}

fn is_marker(line: &str, mark: &str) -> bool {
    line.strip_prefix(mark)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

fn marker_rest(marker: &str) -> &str {
    marker.get(3..).unwrap_or("")
}

fn is_blank_line(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// Splits `input` into documents at `---` lines; a `...` line closes its document. A line
/// that starts with either marker is always one: YAML forbids them inside content.
fn segments<'a>(input: &'a str) -> Vec<Segment<'a>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut first_line = 0;
    let mut pos = 0;
    let close = |out: &mut Vec<Segment<'a>>, from: usize, to: usize, first_line: usize| {
        if from < to {
            out.push(segment(&input[from..to], first_line));
        }
    };
    for (line_no, line) in input.split_inclusive('\n').enumerate() {
        if is_marker(line, "---") {
            close(&mut out, start, pos, first_line);
            start = pos;
            first_line = line_no;
        } else if is_marker(line, "...") {
            close(&mut out, start, pos + line.len(), first_line);
            start = pos + line.len();
            first_line = line_no + 1;
        }
        pos += line.len();
    }
    close(&mut out, start, input.len(), first_line);
    out
}

fn segment(text: &str, first_line: usize) -> Segment<'_> {
    let mut rest = text;
    let mut take = |pred: &dyn Fn(&str) -> bool| {
        let first = rest.split_inclusive('\n').next().unwrap_or("");
        if !first.is_empty() && pred(first) {
            let (line, tail) = rest.split_at(first.len());
            rest = tail;
            line
        } else {
            ""
        }
    };
    let marker = take(&|l| is_marker(l, "---"));
    let header_len = rest
        .split_inclusive('\n')
        .take_while(|l| is_blank_line(l) && !is_marker(l, "..."))
        .map(str::len)
        .sum();
    let (header, rest) = rest.split_at(header_len);
    let (body, end) = match rest.split_inclusive('\n').next_back() {
        Some(last) if is_marker(last, "...") => rest.split_at(rest.len() - last.len()),
        _ => (rest, ""),
    };
    Segment {
        text,
        marker,
        header,
        body,
        end,
        first_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_split_at_markers_only() {
        let input = "# top\n---\na: 1\n--- # two\nb: |\n  ---x\n...\n---\n";
        let segs = segments(input);
        let texts: Vec<&str> = segs.iter().map(|s| s.text).collect();
        assert_eq!(
            texts,
            [
                "# top\n",
                "---\na: 1\n",
                "--- # two\nb: |\n  ---x\n...\n",
                "---\n"
            ]
        );
        assert!(segs[0].is_blank() && segs[3].is_blank());
        assert!(!segs[1].is_blank() && !segs[2].is_blank());
        assert_eq!(segs[2].marker, "--- # two\n");
        assert_eq!(segs[2].body, "b: |\n  ---x\n");
        assert_eq!(segs[2].end, "...\n");
        assert_eq!(segs[2].first_line, 3);
        assert_eq!(segments("").len(), 0);
        assert_eq!(segments("a: 1").len(), 1);
    }

    #[test]
    fn a_header_of_comments_is_kept_apart() {
        let s = segment("---\n# web\n\napiVersion: v1\n", 0);
        assert_eq!(
            (s.marker, s.header, s.body),
            ("---\n", "# web\n\n", "apiVersion: v1\n")
        );
        assert_eq!(segment("--- !!map\na: 1\n", 0).marker_out(), "---\n");
    }

    #[test]
    fn parse_errors_name_the_document_and_the_streams_line() {
        let input = "apiVersion: v1\nkind: Service\n---\napiVersion: v1\nkind: Pod\nspec: [\n";
        let errors = inject(input, &Settings::default()).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].place.document, 2);
        let text = errors[0].to_string();
        assert!(text.starts_with("document 2: not YAML: "), "{text}");
        assert!(text.contains("line 7") || text.contains("7:"), "{text}");
    }

    #[test]
    fn untouched_documents_pass_byte_for_byte() {
        let input = "# services\napiVersion: v1\nkind: Service   # the front\nmetadata: {name: web}\n---\n\n---\napiVersion: v1\nkind: ConfigMap\ndata: {a: 'on'}\n";
        let out = inject(input, &Settings::default()).unwrap();
        assert_eq!(out.text, input);
        assert!(out.notes.is_empty());
    }
}

#[cfg(test)]
mod round_trip {
    use super::*;

    /// Strings a YAML emitter gets wrong easily: each must read back as the same string
    /// after its pod is injected and written out again.
    const AWKWARD: [&str; 24] = [
        "on",
        "yes",
        "No",
        "~",
        "null",
        "",
        "0x10",
        "1e3",
        "0644",
        "12:30",
        "- x",
        "a: b",
        "#hash",
        "x #y",
        "'single'",
        "\"double\"",
        " lead",
        "trail ",
        "tab\there",
        "*star",
        "multi\nline\n",
        "multi\nline  \n\n",
        "é ü 中",
        "{json: 1}",
    ];

    #[test]
    fn awkward_strings_survive_injection() {
        let args: Vec<String> = AWKWARD.iter().map(|s| format!("{s:?}")).collect();
        let input = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n  - name: c\n    image: x\n    args: [{}]\n",
            args.join(", ")
        );
        let out = inject(&input, &Settings::default()).unwrap().text;
        let pod: Value = serde_saphyr::from_str(&out).unwrap();
        let got = pod
            .pointer(&["spec", "containers"])
            .and_then(Value::as_seq)
            .and_then(|c| c[0].get("args"))
            .cloned();
        assert_eq!(got, Some(Value::strs(AWKWARD)), "{out}");
    }

    #[test]
    fn numbers_keep_their_meaning() {
        let input = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  terminationGracePeriodSeconds: 30\n  containers: [{name: c, image: x}]\n  volumes: [{name: v, configMap: {name: c, defaultMode: 0644}}]\n  priority: -5\n  x-ratio: 0.25\n";
        let out = inject(input, &Settings::default()).unwrap().text;
        let pod: Value = serde_saphyr::from_str(&out).unwrap();
        let spec = |k| pod.pointer(&["spec", k]).cloned();
        assert_eq!(spec("terminationGracePeriodSeconds"), Some(Value::UInt(30)));
        assert_eq!(spec("priority"), Some(Value::Int(-5)));
        assert_eq!(spec("x-ratio"), Some(Value::Float(0.25)));
        // 0644 is octal to kubectl (YAML 1.1), so 420.
        assert!(out.contains("defaultMode: 420"), "{out}");
    }

    #[test]
    fn a_document_nested_too_deep_is_refused_not_a_crash() {
        let depth = 200;
        let nested = format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth));
        let input =
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\nx: {nested}\n");
        let errors = inject(&input, &Settings::default()).unwrap_err();
        assert!(errors[0].to_string().contains("Depth"), "{}", errors[0]);
    }
}
