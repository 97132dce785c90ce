//! The disk: files as the log and the snapshot store use them, and nothing more. Durability is
//! explicit: a write is durable once its file's [`DiskFile::sync_data`] returns, and a file's
//! creation, removal or renaming once its directory's [`Disk::sync_dir`] does. The real disk is
//! [`RealDisk`]; the simulation's, with its crash model, is [`crate::mem_disk::MemDisk`].

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Reading only.
    Read,
    /// Writes go to the end of an existing file.
    Append,
    /// Created, or emptied if it exists; writes go to the end.
    Create,
}

/// An open file. Writes always go to its end.
pub trait DiskFile: Send + Sync {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Makes the file's contents durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
}

pub trait Disk: Send + Sync + Debug + 'static {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DiskFile>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the creations, removals and renamings in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Replaces a file's contents without syncing (a hint that may be lost).
    fn write_unsynced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.open(path, OpenMode::Create)?.write_all(bytes)
    }
}

/// A [`DiskFile`] as a `std::io::Write`, for buffering.
pub struct FileWriter(pub Box<dyn DiskFile>);

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The machine's file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealDisk;

struct RealFile(File);

impl DiskFile for RealFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        Write::write_all(&mut self.0, bytes)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.0, buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)?;
        // A file opened with `Create` is not in append mode: keep its cursor at the end.
        self.0.seek(SeekFrom::End(0)).map(drop)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl Disk for RealDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        File::open(path)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DiskFile>> {
        let file = match mode {
            OpenMode::Read => File::open(path)?,
            OpenMode::Append => OpenOptions::new().read(true).append(true).open(path)?,
            // Not append mode (the standard library refuses append with truncate): the cursor
            // starts at 0 of an emptied file and only moves forward.
            OpenMode::Create => OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)?,
        };
        Ok(Box::new(RealFile(file)))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}
