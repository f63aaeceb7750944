//! Names and labels near the ones a user typed: what turns "no such Service" and "the
//! selector matches nothing" into "did you mean".

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

/// Whether `candidate` looks like a typo of `wanted`: a few edits apart, relative to length.
pub fn is_near(wanted: &str, candidate: &str) -> bool {
    if wanted == candidate {
        return false;
    }
    let distance = strsim::damerau_levenshtein(wanted, candidate);
    let longest = wanted.chars().count().max(candidate.chars().count());
    distance <= 1.max(longest / 4) && distance < longest
        || candidate.starts_with(wanted)
        || wanted.starts_with(candidate)
}

/// The names among `names` near `wanted`, closest first.
pub fn near_names<'a>(wanted: &str, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut near: Vec<(usize, &str)> = names
        .into_iter()
        .filter(|n| is_near(wanted, n))
        .map(|n| (strsim::damerau_levenshtein(wanted, n), n))
        .collect();
    near.sort();
    near.dedup();
    near.into_iter().map(|(_, n)| n.to_owned()).collect()
}

/// For a selector that matches no pod: each label of it that some pods have with a near
/// value, or that all but one label of the selector would match, as a sentence each.
pub fn near_labels(selector: &BTreeMap<String, String>, pods: &[Pod]) -> Vec<String> {
    let labels_of = |p: &Pod| p.metadata.labels.clone().unwrap_or_default();
    let mut found = Vec::new();
    for (key, value) in selector {
        // The pods the rest of the selector matches: this one label is what keeps them out.
        let others: Vec<&Pod> = pods
            .iter()
            .filter(|p| {
                let labels = labels_of(p);
                selector
                    .iter()
                    .filter(|(k, _)| *k != key)
                    .all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect();
        let mut values: BTreeMap<String, usize> = BTreeMap::new();
        for p in &others {
            if let Some(v) = labels_of(p).get(key) {
                *values.entry(v.clone()).or_default() += 1;
            }
        }
        let near: Vec<String> = values
            .iter()
            .filter(|(v, _)| is_near(value, v))
            .map(|(v, n)| format!("{n} {} {key}={v}", pods_word(*n)))
            .collect();
        if !near.is_empty() {
            found.push(format!(
                "selector {key}={value} matches no pod; {}",
                near.join(", ")
            ));
        } else if !others.is_empty() && selector.len() > 1 {
            let names: Vec<String> = others
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            found.push(format!(
                "without {key}={value} the selector would match {}: {}",
                others.len(),
                names.join(", ")
            ));
        }
    }
    found
}

fn pods_word(n: usize) -> &'static str {
    if n == 1 { "pod has" } else { "pods have" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            }
        }))
        .unwrap()
    }

    #[test]
    fn typos_are_near_and_other_names_are_not() {
        assert!(is_near("wbe", "web"));
        assert!(is_near("web", "web-lb"));
        assert!(is_near("frontend", "frontnd"));
        assert!(!is_near("web", "api"));
        assert!(!is_near("wbe", "db"));
        assert!(!is_near("web", "web"));
        assert_eq!(near_names("wbe", ["api", "web", "db"]), vec!["web"]);
    }

    #[test]
    fn a_selector_typo_names_the_pods_with_the_near_value() {
        let pods = [
            pod("web-1", &[("app", "web"), ("track", "stable")]),
            pod("web-2", &[("app", "web"), ("track", "stable")]),
            pod("api-1", &[("app", "api")]),
        ];
        let selector = BTreeMap::from([("app".to_owned(), "wbe".to_owned())]);
        assert_eq!(
            near_labels(&selector, &pods),
            vec!["selector app=wbe matches no pod; 2 pods have app=web"]
        );
    }

    #[test]
    fn a_label_no_pod_has_is_named_by_what_the_rest_would_match() {
        let pods = [pod("web-1", &[("app", "web")])];
        let selector = BTreeMap::from([
            ("app".to_owned(), "web".to_owned()),
            ("tier".to_owned(), "frontend".to_owned()),
        ]);
        assert_eq!(
            near_labels(&selector, &pods),
            vec!["without tier=frontend the selector would match 1: web-1"]
        );
    }
}
