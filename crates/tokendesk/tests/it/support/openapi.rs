//! The API's contract in the tests: every JSON answer an API test receives is checked against
//! the schema the served OpenAPI document gives for that operation and status. An answer of a
//! status the document does not list, or of another shape, fails the test that received it.

use serde_json::Value;

/// The served document.
pub struct Contract {
    doc: Value,
}

/// Replaces every local `$ref` by what it points to.
fn resolve(doc: &Value, schema: &Value, depth: usize) -> Value {
    if depth > 32 {
        return schema.clone();
    }
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref")
                && let Some(pointer) = target.strip_prefix('#')
                && let Some(found) = doc.pointer(pointer)
            {
                return resolve(doc, found, depth + 1);
            }
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), resolve(doc, v, depth + 1)))
                    .collect(),
            )
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| resolve(doc, v, depth + 1)).collect())
        }
        other => other.clone(),
    }
}

/// Whether a concrete path matches a templated one (`/requests/{id}`).
fn matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(a, b)| (a.starts_with('{') && a.ends_with('}') && !b.is_empty()) || a == b)
}

impl Contract {
    pub fn new(doc: Value) -> Contract {
        Contract { doc }
    }

    /// The operation of `method path` (a concrete path such as `/api/v1/requests/12`).
    fn operation(&self, method: &str, path: &str) -> Option<&Value> {
        let paths = self.doc["paths"].as_object()?;
        let relative = path.strip_prefix("/api/v1").unwrap_or(path);
        let method = method.to_ascii_lowercase();
        paths
            .iter()
            .filter(|(template, item)| {
                let root = item["servers"][0]["url"] == "/";
                matches(template, if root { path } else { relative })
            })
            // A literal segment beats a parameter (`/requests/new` before `/requests/{id}`).
            .min_by_key(|(template, _)| template.matches('{').count())
            .and_then(|(_, item)| item.get(&method))
    }

    /// Checks a JSON answer. `Ok(false)` when the address is no operation of the API (the
    /// fallback's 404, a page).
    pub fn check(
        &self,
        method: &str,
        path: &str,
        status: u16,
        body: &Value,
    ) -> Result<bool, String> {
        let Some(operation) = self.operation(method, path) else {
            return Ok(false);
        };
        let responses = &operation["responses"];
        let Some(response) = responses
            .get(status.to_string())
            .or_else(|| responses.get("default"))
        else {
            return Err(format!(
                "{method} {path} answered {status}, which the OpenAPI document does not list for it"
            ));
        };
        let response = resolve(&self.doc, response, 0);
        let Some(schema) = response["content"]["application/json"].get("schema") else {
            return Err(format!(
                "{method} {path} answered {status} with JSON, but the document gives no JSON schema for it"
            ));
        };
        let validator = jsonschema::validator_for(schema)
            .map_err(|e| format!("the schema of {method} {path} {status} is invalid: {e}"))?;
        let problems: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if problems.is_empty() {
            Ok(true)
        } else {
            Err(format!(
                "{method} {path} answered {status} outside its schema:\n  {}\nbody: {body}",
                problems.join("\n  ")
            ))
        }
    }
}
