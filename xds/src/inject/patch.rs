//! JSON Patch (RFC 6902) from one value to another, as an admission webhook answers: `add`,
//! `remove` and `replace` operations with JSON Pointer (RFC 6901) paths. Items put in front of
//! a list (injected init containers) or after its end (a volume) become `add`s.

use serde::Serialize;

use super::value::Value;

/// One operation.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum PatchOp {
    Add { path: String, value: Value },
    Remove { path: String },
    Replace { path: String, value: Value },
}

/// The operations that turn `from` into `to` (in order; applying them gives `to`, except that
/// keys a mapping gains come last in it).
pub fn diff(from: &Value, to: &Value) -> Vec<PatchOp> {
    let mut ops = Vec::new();
    walk(&mut String::new(), from, to, &mut ops);
    ops
}

fn walk(path: &mut String, from: &Value, to: &Value, ops: &mut Vec<PatchOp>) {
    if from == to {
        return;
    }
    match (from, to) {
        (Value::Map(a), Value::Map(b)) => {
            for (k, _) in a.iter().filter(|(k, _)| !b.contains_key(k)) {
                ops.push(PatchOp::Remove {
                    path: child(path, k),
                });
            }
            for (k, new) in b.iter() {
                match a.get(k) {
                    Some(old) => {
                        let len = path.len();
                        path.push_str(&child("", k));
                        walk(path, old, new, ops);
                        path.truncate(len);
                    }
                    None => ops.push(PatchOp::Add {
                        path: child(path, k),
                        value: new.clone(),
                    }),
                }
            }
        }
        (Value::Seq(a), Value::Seq(b)) if a.len() == b.len() => {
            for (i, (old, new)) in a.iter().zip(b).enumerate() {
                let len = path.len();
                path.push_str(&format!("/{i}"));
                walk(path, old, new, ops);
                path.truncate(len);
            }
        }
        (Value::Seq(a), Value::Seq(b)) if b.len() > a.len() && b.ends_with(a) => {
            for (i, new) in b[..b.len() - a.len()].iter().enumerate() {
                ops.push(PatchOp::Add {
                    path: format!("{path}/{i}"),
                    value: new.clone(),
                });
            }
        }
        (Value::Seq(a), Value::Seq(b)) if b.len() > a.len() && b.starts_with(a) => {
            for new in &b[a.len()..] {
                ops.push(PatchOp::Add {
                    path: format!("{path}/-"),
                    value: new.clone(),
                });
            }
        }
        _ => ops.push(PatchOp::Replace {
            path: path.clone(),
            value: to.clone(),
        }),
    }
}

/// `path` + `/` + the key escaped as RFC 6901 says (`~` → `~0`, `/` → `~1`).
fn child(path: &str, key: &str) -> String {
    format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies `ops` to `v`, as an API server would (enough of RFC 6902 for `diff`'s output).
    fn apply(v: &mut Value, ops: &[PatchOp]) {
        for op in ops {
            let (path, value) = match op {
                PatchOp::Add { path, value } | PatchOp::Replace { path, value } => {
                    (path, Some(value.clone()))
                }
                PatchOp::Remove { path } => (path, None),
            };
            let steps: Vec<String> = path
                .split('/')
                .skip(1)
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect();
            let Some((last, parents)) = steps.split_last() else {
                *v = value.unwrap();
                continue;
            };
            let mut node = &mut *v;
            for s in parents {
                node = match node {
                    Value::Map(m) => m.get_mut(s).unwrap(),
                    Value::Seq(items) => &mut items[s.parse::<usize>().unwrap()],
                    other => panic!("{other:?}"),
                };
            }
            match (node, op) {
                (Value::Map(m), PatchOp::Remove { .. }) => {
                    *m = m
                        .iter()
                        .filter(|(k, _)| k != last)
                        .map(|(k, v)| (k, v.clone()))
                        .collect();
                }
                (Value::Map(m), _) => m.insert(last.clone(), value.unwrap()),
                (Value::Seq(items), PatchOp::Add { .. }) if last == "-" => {
                    items.push(value.unwrap())
                }
                (Value::Seq(items), PatchOp::Add { .. }) => {
                    items.insert(last.parse().unwrap(), value.unwrap())
                }
                (Value::Seq(items), PatchOp::Replace { .. }) => {
                    items[last.parse::<usize>().unwrap()] = value.unwrap()
                }
                (Value::Seq(items), PatchOp::Remove { .. }) => {
                    items.remove(last.parse().unwrap());
                }
                (other, _) => panic!("{other:?}"),
            }
        }
    }

    /// Equal up to key order.
    fn same(a: &Value, b: &Value) -> bool {
        let json = |v: &Value| serde_json::to_value(v).unwrap();
        json(a) == json(b)
    }

    fn yaml(text: &str) -> Value {
        serde_saphyr::from_str(text).unwrap()
    }

    #[test]
    fn diffs_apply_back() {
        let cases = [
            ("a: 1", "a: 2"),
            ("a: 1\nb: 2", "b: 2"),
            ("a: {x: 1}", "a: {x: 1, y: [1, 2]}"),
            ("l: [b, c]", "l: [a0, a1, b, c]"),
            ("l: [a, b]", "l: [a, b, c]"),
            ("l: [a, b]", "l: [b, a, c]"),
            ("l: [a, b, c]", "l: [a]"),
            ("l: [{n: 1}, {n: 2}]", "l: [{n: 1}, {n: 3}]"),
            ("x/y~z: 1", "x/y~z: 2\nq: null"),
            ("a: 1", "[1]"),
        ];
        for (from, to) in cases {
            let (from, to) = (yaml(from), yaml(to));
            let ops = diff(&from, &to);
            let mut patched = from.clone();
            apply(&mut patched, &ops);
            assert!(
                same(&patched, &to),
                "{from:?} -> {to:?}: {ops:?} gave {patched:?}"
            );
        }
        assert!(diff(&yaml("a: [1]"), &yaml("a: [1]")).is_empty());
    }

    #[test]
    fn prepended_items_are_adds_at_their_index() {
        let ops = diff(&yaml("l: [c]"), &yaml("l: [a, b, c]"));
        assert_eq!(
            serde_json::to_string(&ops).unwrap(),
            r#"[{"op":"add","path":"/l/0","value":"a"},{"op":"add","path":"/l/1","value":"b"}]"#
        );
        let ops = diff(&yaml("a/b: 1"), &yaml("a/b: 2"));
        assert_eq!(
            serde_json::to_string(&ops).unwrap(),
            r#"[{"op":"replace","path":"/a~1b","value":2}]"#
        );
    }
}
