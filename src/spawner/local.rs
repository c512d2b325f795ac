//! The `local` spawner: one child process per server (setuid to the user when root).
