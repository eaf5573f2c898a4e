//! Request parameters the way Rails sees them: the query string merged with a form-encoded or
//! JSON body, with nested JSON flattened to `token[purpose]`-style keys.

use axum::body::Bytes;
use axum::http::{HeaderMap, header};
use serde_json::{Value, json};

use crate::errors::ApiError;
use crate::model::TokenParams;

#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(
        query: Option<&str>,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Params, ApiError> {
        let mut pairs: Vec<(String, String)> = query
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if !body.is_empty() {
            if content_type.starts_with("application/json") {
                let value: Value = serde_json::from_slice(body).map_err(|e| {
                    ApiError::BadRequestBody(json!({"errors": [{
                        "message": format!("The request body is not valid JSON: {e}")
                    }]}))
                })?;
                flatten(&value, String::new(), &mut pairs);
            } else {
                pairs.extend(url::form_urlencoded::parse(body).into_owned());
            }
        }
        Ok(Params(pairs))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated key such as `include[]`.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The pairs other than the given keys (to carry the original query into `Link` URLs).
    pub fn without(&self, keys: &[&str]) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter(|(k, _)| !keys.contains(&k.as_str()))
            .cloned()
            .collect()
    }

    /// The `token[...]` parameters.
    pub fn token(&self) -> TokenParams {
        TokenParams {
            present: self.0.iter().any(|(k, _)| k.starts_with("token[")),
            purpose: self.get("token[purpose]").map(str::to_owned),
            expires_at: self.get("token[expires_at]").map(str::to_owned),
            scopes: Some(self.all("token[scopes][]")).filter(|s| !s.is_empty()),
            regenerate: self.get("token[regenerate]").map(str::to_owned),
        }
    }
}

fn flatten(value: &Value, prefix: String, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}[{k}]")
                };
                flatten(v, key, out);
            }
        }
        Value::Array(items) => {
            for v in items {
                flatten(v, format!("{prefix}[]"), out);
            }
        }
        Value::Null => out.push((prefix, String::new())),
        Value::String(s) => out.push((prefix, s.clone())),
        other => out.push((prefix, other.to_string())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
        h
    }

    #[test]
    fn json_and_forms_read_alike() {
        let json_body = Bytes::from(
            r#"{"token":{"purpose":"p","expires_at":null,"scopes":["a","b"],"regenerate":true}}"#,
        );
        let p = Params::parse(None, &headers("application/json"), &json_body).unwrap();
        let t = p.token();
        assert!(t.present);
        assert_eq!(t.purpose.as_deref(), Some("p"));
        assert_eq!(t.expires_at.as_deref(), Some(""));
        assert_eq!(t.scopes.unwrap(), vec!["a", "b"]);
        assert_eq!(t.regenerate.as_deref(), Some("true"));

        let form = Bytes::from("token%5Bpurpose%5D=p+q&token%5Bscopes%5D%5B%5D=a");
        let p = Params::parse(
            Some("per_page=5"),
            &headers("application/x-www-form-urlencoded"),
            &form,
        )
        .unwrap();
        assert_eq!(p.token().purpose.as_deref(), Some("p q"));
        assert_eq!(p.get("per_page"), Some("5"));
        assert!(p.token().expires_at.is_none());
    }

    #[test]
    fn bad_json_is_a_bad_request() {
        let e = Params::parse(None, &headers("application/json"), &Bytes::from("{")).unwrap_err();
        assert!(matches!(e, ApiError::BadRequestBody(_)));
    }
}
