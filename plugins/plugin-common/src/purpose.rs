//! Why a message is sent, as the helpers here see it, and one value per
//! purpose (e.g. a channel's templates).
//!
//! The WIT `purpose` enum exists only in each plugin crate (see
//! [`crate::channel_plugin`]), which converts it to [`MessagePurpose`] with an
//! exhaustive match: a purpose added by a later contract stops the build there.

/// The purpose of a message: `message.purpose` of `render`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessagePurpose {
    /// The appointment was booked.
    Confirmation,
    /// A scheduled reminder before the appointment.
    Reminder,
    /// The appointment was cancelled.
    Cancellation,
    /// The appointment was moved to a new time.
    Reschedule,
}

impl MessagePurpose {
    pub const ALL: [MessagePurpose; 4] = [
        MessagePurpose::Confirmation,
        MessagePurpose::Reminder,
        MessagePurpose::Cancellation,
        MessagePurpose::Reschedule,
    ];

    /// The WIT name, as `{purpose}` shows it and Mailgun's `v:purpose` carries it.
    pub fn name(self) -> &'static str {
        match self {
            MessagePurpose::Confirmation => "confirmation",
            MessagePurpose::Reminder => "reminder",
            MessagePurpose::Cancellation => "cancellation",
            MessagePurpose::Reschedule => "reschedule",
        }
    }
}

/// One `T` for each purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByPurpose<T> {
    pub confirmation: T,
    pub reminder: T,
    pub cancellation: T,
    pub reschedule: T,
}

impl<T> ByPurpose<T> {
    pub fn get(&self, purpose: MessagePurpose) -> &T {
        match purpose {
            MessagePurpose::Confirmation => &self.confirmation,
            MessagePurpose::Reminder => &self.reminder,
            MessagePurpose::Cancellation => &self.cancellation,
            MessagePurpose::Reschedule => &self.reschedule,
        }
    }

    /// Reads the value of every purpose, in [`MessagePurpose::ALL`] order,
    /// reporting the problems of all of them rather than stopping at the
    /// first (see [`crate::keep`]).
    pub fn try_from_fn<F>(mut read: F) -> Result<ByPurpose<T>, Vec<String>>
    where
        F: FnMut(MessagePurpose) -> Result<T, Vec<String>>,
    {
        let mut problems = Vec::new();
        let [confirmation, reminder, cancellation, reschedule] =
            MessagePurpose::ALL.map(|p| crate::keep_all(&mut problems, read(p)));
        match (confirmation, reminder, cancellation, reschedule) {
            (Some(confirmation), Some(reminder), Some(cancellation), Some(reschedule)) => {
                Ok(ByPurpose {
                    confirmation,
                    reminder,
                    cancellation,
                    reschedule,
                })
            }
            // Every `None` left its problems behind.
            _ => Err(problems),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_wit_names() {
        let names = MessagePurpose::ALL.map(MessagePurpose::name);
        assert_eq!(
            names,
            ["confirmation", "reminder", "cancellation", "reschedule"]
        );
    }

    #[test]
    fn every_purpose_is_read_and_every_problem_kept() {
        let all = ByPurpose::try_from_fn(|p| Ok::<_, Vec<String>>(p.name().len()));
        let all = all.map_err(|e| e.join("; "));
        for p in MessagePurpose::ALL {
            assert_eq!(all.as_ref().map(|a| *a.get(p)), Ok(p.name().len()), "{p:?}");
        }

        let bad = ByPurpose::try_from_fn(|p| match p {
            MessagePurpose::Reminder | MessagePurpose::Reschedule => {
                Err(vec![format!("bad {}", p.name())])
            }
            _ => Ok(()),
        });
        assert_eq!(
            bad,
            Err(vec![
                "bad reminder".to_string(),
                "bad reschedule".to_string()
            ])
        );
    }
}
