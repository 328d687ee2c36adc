//! Which server messages answer which client message: the reply grammar both the relay's
//! tracker and the proxy's own awaited batches check every reply against.

/// The kind of a sent message, which decides its replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// ParseComplete.
    Parse,
    /// BindComplete.
    Bind,
    /// CloseComplete.
    Close,
    /// RowDescription or NoData (after ParameterDescription for a statement).
    Describe,
    /// CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// ReadyForQuery.
    Sync,
    /// ReadyForQuery (errors inside do not end it).
    Query,
    /// ReadyForQuery, after FunctionCallResponse or an error.
    FunctionCall,
    /// CopyData from the client: no reply; where the client's data starts, kept until the
    /// server says whether a COPY IN reads it.
    CopyData,
    /// CopyDone/CopyFail from the client: no reply; where the client ends its COPY data.
    CopyEnd,
}

impl Kind {
    /// The kind of a client message; `None` for Flush (never answered, never ambiguous).
    pub fn of(tag: u8, body: &[u8]) -> Option<Self> {
        match tag {
            b'P' => Some(Kind::Parse),
            b'B' => Some(Kind::Bind),
            b'C' => Some(Kind::Close),
            b'D' if !body.is_empty() => Some(Kind::Describe),
            b'E' => Some(Kind::Execute),
            b'S' => Some(Kind::Sync),
            b'Q' => Some(Kind::Query),
            b'F' => Some(Kind::FunctionCall),
            b'd' => Some(Kind::CopyData),
            b'c' | b'f' => Some(Kind::CopyEnd),
            _ => None,
        }
    }

    /// Ends with ReadyForQuery: the units a client counts as "in flight".
    pub fn ends_batch(self) -> bool {
        matches!(self, Kind::Sync | Kind::Query | Kind::FunctionCall)
    }

    /// An ErrorResponse ends the reply to this message and the server skips every message up
    /// to the next Sync (extended protocol); to the others it is part of the reply.
    pub fn error_ends(self) -> bool {
        !matches!(self, Kind::Sync | Kind::Query | Kind::FunctionCall)
    }

    /// COPY data or its end: recorded only to know where a COPY's data ends.
    pub fn is_marker(self) -> bool {
        matches!(self, Kind::CopyData | Kind::CopyEnd)
    }

    /// What server message `tag` is to an entry of this kind (ErrorResponse aside).
    pub fn reply(self, tag: u8) -> Reply {
        let part = match self {
            Kind::Parse => return Reply::terminal(tag == b'1'),
            Kind::Bind => return Reply::terminal(tag == b'2'),
            Kind::Close => return Reply::terminal(tag == b'3'),
            Kind::Sync => return Reply::terminal(tag == b'Z'),
            Kind::Describe if matches!(tag, b'T' | b'n') => return Reply::End,
            Kind::Execute if matches!(tag, b'C' | b'I' | b's') => return Reply::End,
            Kind::Query | Kind::FunctionCall if tag == b'Z' => return Reply::End,
            Kind::Describe => tag == b't',
            Kind::Execute => matches!(tag, b'D' | b'G' | b'H' | b'd' | b'c' | b'W'),
            Kind::Query => matches!(tag, b'T' | b'D' | b'C' | b'I' | b'G' | b'H' | b'd' | b'c' | b'W'),
            Kind::FunctionCall => tag == b'V',
            Kind::CopyData | Kind::CopyEnd => false,
        };
        if part { Reply::Part } else { Reply::Invalid }
    }
}

/// What a server message is to the message it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Part of the reply, not its end.
    Part,
    /// The end of the reply.
    End,
    /// No reply to that message looks like this: the server and the proxy are out of step.
    Invalid,
}

impl Reply {
    fn terminal(valid: bool) -> Self {
        if valid { Reply::End } else { Reply::Invalid }
    }
}
