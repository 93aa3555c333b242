//! An error as one line of text with every cause under it, for the places where the words
//! travel on (a row's last error, a notification's delivery result) rather than into a log.

/// `e` and its causes, outermost first, joined by ": ".
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("request failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_cause_follows_the_error_it_caused() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(with_causes(&e), "request failed: connection refused");
    }
}
