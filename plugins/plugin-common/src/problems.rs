//! Settings are read to the end even after a bad one, so `check-settings`
//! reports every problem at once instead of one per restart.

/// The value of a read, or `None` with its problem noted.
pub fn keep<T>(problems: &mut Vec<String>, read: Result<T, String>) -> Option<T> {
    read.map_err(|p| problems.push(p)).ok()
}

/// [`keep`] for a read that reports several problems at once.
pub fn keep_all<T>(problems: &mut Vec<String>, read: Result<T, Vec<String>>) -> Option<T> {
    read.map_err(|p| problems.extend(p)).ok()
}

/// The render rejection for settings that `check-settings` refuses. The host
/// checks settings at start-up, so this only happens when it did not.
pub fn invalid_settings(problems: Vec<String>) -> String {
    format!("invalid settings: {}", problems.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_kept_and_every_value_returned() {
        let mut problems = Vec::new();
        assert_eq!(keep(&mut problems, Ok::<_, String>(1)), Some(1));
        assert_eq!(keep::<u8>(&mut problems, Err("a".to_string())), None);
        assert_eq!(keep_all(&mut problems, Ok::<_, Vec<String>>(2)), Some(2));
        assert_eq!(
            keep_all::<u8>(&mut problems, Err(vec!["b".to_string(), "c".to_string()])),
            None
        );
        assert_eq!(problems, ["a", "b", "c"]);
        assert_eq!(invalid_settings(problems), "invalid settings: a; b; c");
    }
}
