"""Reading and writing video files with PyAV."""
