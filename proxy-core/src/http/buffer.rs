//! Request body buffering (`proxy-request-buffering: on`, ingress-nginx's default): the
//! whole body is read before a pod connection is taken, so a slow client costs a socket
//! here rather than a connection to the pod. The first `client-body-buffer-size` bytes
//! stay in memory; the rest goes to a temporary file that has no name (unlinked as it
//! is created), so it is gone when the request is, whatever happens.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncSeekExt, AsyncWriteExt, ReadBuf};

use super::body::{RequestBody, RequestBodyError};

/// Read size from the spill file.
const FILE_CHUNK: usize = 64 * 1024;

/// A request body read whole: chunks in memory, then the spill file.
pub(crate) struct BufferedBody {
    memory: VecDeque<Bytes>,
    file: Option<tokio::fs::File>,
    /// Bytes still to send.
    left: u64,
}

/// Why buffering failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BufferError {
    #[error(transparent)]
    Body(#[from] RequestBodyError),
    #[error("spilling the request body to a temporary file failed: {0}")]
    Spill(io::Error),
}

impl BufferedBody {
    /// Reads `body` to its end, keeping up to `memory` bytes in memory.
    pub async fn read(mut body: RequestBody, memory: usize) -> Result<Self, BufferError> {
        let mut chunks = VecDeque::new();
        let mut in_memory = 0usize;
        let mut file: Option<tokio::fs::File> = None;
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            // Trailers are dropped: the body goes upstream with a Content-Length.
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            len += data.len() as u64;
            if file.is_none() && in_memory + data.len() <= memory {
                in_memory += data.len();
                chunks.push_back(data);
                continue;
            }
            let f = match &mut file {
                Some(f) => f,
                None => {
                    let std_file = tokio::task::spawn_blocking(tempfile::tempfile)
                        .await
                        .map_err(|e| BufferError::Spill(io::Error::other(e)))?
                        .map_err(BufferError::Spill)?;
                    file.insert(tokio::fs::File::from_std(std_file))
                }
            };
            f.write_all(&data).await.map_err(BufferError::Spill)?;
        }
        if let Some(f) = &mut file {
            f.flush().await.map_err(BufferError::Spill)?;
            f.rewind().await.map_err(BufferError::Spill)?;
        }
        Ok(Self {
            memory: chunks,
            file,
            left: len,
        })
    }

    pub fn len(&self) -> u64 {
        self.left
    }

    #[cfg(test)]
    pub fn for_tests(data: &'static [u8]) -> Self {
        Self {
            memory: VecDeque::from([Bytes::from_static(data)]),
            file: None,
            left: data.len() as u64,
        }
    }

    /// A second copy of a body held wholly in memory and not yet read from (the chunks
    /// are shared, not copied); `None` for one spilled to a file.
    pub fn try_clone(&self) -> Option<Self> {
        if self.file.is_some() {
            return None;
        }
        Some(Self {
            memory: self.memory.clone(),
            file: None,
            left: self.left,
        })
    }
}

impl Body for BufferedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if let Some(chunk) = this.memory.pop_front() {
            this.left -= chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let Some(file) = &mut this.file else {
            return Poll::Ready(None);
        };
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let want = usize::try_from(this.left)
            .unwrap_or(usize::MAX)
            .min(FILE_CHUNK);
        let mut buf = BytesMut::zeroed(want);
        let mut read = ReadBuf::new(&mut buf);
        match Pin::new(file).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                let n = read.filled().len();
                if n == 0 {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the spilled request body ended early",
                    ))));
                }
                buf.truncate(n);
                this.left -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(buf.freeze()))))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}
