//! GCS listing semantics over a sorted map: prefix, delimiter, start offset, pages.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::Stored;
use crate::store::{ErrorKind, ListPage, ListRequest, ObjectKey, StoreError, StoreResult};

/// GCS's cap on one page (`maxResults` above it is lowered to it).
const MAX_PAGE: usize = 1000;

/// Tag of a page token that resumes after an object name.
const AFTER_OBJECT: char = 'o';
/// Tag of a page token that resumes after every name under a prefix.
const AFTER_PREFIX: char = 'p';

/// Where a page token says the previous page stopped.
enum Resume {
    /// Strictly after this object name.
    AfterObject(String),
    /// After every name that starts with this prefix (the prefix was the page's last entry).
    AfterPrefix(String),
}

impl Resume {
    fn parse(token: &str) -> StoreResult<Self> {
        let mut chars = token.chars();
        let rest = || token[1..].to_owned();
        match chars.next() {
            Some(AFTER_OBJECT) => Ok(Resume::AfterObject(rest())),
            Some(AFTER_PREFIX) => Ok(Resume::AfterPrefix(rest())),
            _ => Err(StoreError::new(
                ErrorKind::InvalidArgument,
                "invalid list page token",
            )),
        }
    }

    fn name(&self) -> &str {
        match self {
            Resume::AfterObject(s) | Resume::AfterPrefix(s) => s,
        }
    }
}

/// One entry of a listing, before it is turned into the page.
enum Entry<'a> {
    Object(&'a Stored),
    Prefix(String),
}

/// Computes one page of `request` over `objects`.
///
/// Page tokens name the last entry returned, so a listing stays correct (every name that exists
/// throughout is returned exactly once) when objects are added or removed between pages.
pub(super) fn list_page(
    objects: &BTreeMap<ObjectKey, Stored>,
    request: &ListRequest,
) -> StoreResult<ListPage> {
    let limit = request
        .max_results
        .map_or(MAX_PAGE, |n| (n as usize).clamp(1, MAX_PAGE));
    let resume = request
        .page_token
        .as_deref()
        .map(Resume::parse)
        .transpose()?;
    let prefix = request.prefix.as_str();
    let delimiter = request.delimiter.as_deref().filter(|d| !d.is_empty());

    // The first name to consider: the largest of prefix, start offset and the resume point.
    let mut lower: Bound<&str> = Bound::Included(prefix);
    if let Some(offset) = request.start_offset.as_deref()
        && offset > prefix
    {
        lower = Bound::Included(offset);
    }
    if let Some(r) = &resume {
        let after = r.name();
        let later = match lower {
            Bound::Included(l) => after >= l,
            _ => true,
        };
        if later {
            lower = Bound::Excluded(after);
        }
    }
    let skip_prefix = match &resume {
        Some(Resume::AfterPrefix(p)) => Some(p.as_str()),
        _ => None,
    };

    let mut page = ListPage::default();
    let mut count = 0usize;
    let mut last: Option<Resume> = None;
    let range = objects
        .range::<str, _>((lower, Bound::Unbounded))
        .map(|(k, v)| (k.as_str(), v));
    for (name, stored) in range {
        if !name.starts_with(prefix) {
            break;
        }
        if let Some(p) = skip_prefix
            && name.starts_with(p)
        {
            continue;
        }
        let entry = match delimiter {
            Some(d) => match name[prefix.len()..].find(d) {
                Some(i) => Entry::Prefix(name[..prefix.len() + i + d.len()].to_owned()),
                None => Entry::Object(stored),
            },
            None => Entry::Object(stored),
        };
        if let (Entry::Prefix(p), Some(Resume::AfterPrefix(prev))) = (&entry, &last)
            && p == prev
        {
            continue; // same common prefix as the entry just added
        }
        if count == limit {
            let token = match last {
                Some(Resume::AfterObject(n)) => format!("{AFTER_OBJECT}{n}"),
                Some(Resume::AfterPrefix(p)) => format!("{AFTER_PREFIX}{p}"),
                None => unreachable!("a full page has a last entry"),
            };
            page.next_page_token = Some(token);
            break;
        }
        count += 1;
        match entry {
            Entry::Object(stored) => {
                last = Some(Resume::AfterObject(name.to_owned()));
                page.objects.push(stored.meta.clone());
            }
            Entry::Prefix(p) => {
                last = Some(Resume::AfterPrefix(p.clone()));
                page.prefixes.push(p);
            }
        }
    }
    Ok(page)
}
