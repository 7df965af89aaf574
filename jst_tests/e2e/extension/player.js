// The player page: plays a /stream/<token> URL in a <video> element, the way the
// JSTorrent extension would show a file before its torrent has finished (STREAMING.md
// §4). The test drives it through Playwright and reads `self.playerState()`.

const video = document.getElementById("video");
self.video = video;
self.playerEvents = [];

for (const name of ["loadedmetadata", "playing", "waiting", "seeking", "seeked", "error"]) {
  video.addEventListener(name, () => self.playerEvents.push([name, video.currentTime]));
}

self.startPlayer = async (url) => {
  video.muted = true; // muted playback needs no user gesture
  video.src = url;
  await video.play();
  return true;
};

self.seekTo = (seconds) => {
  video.currentTime = seconds;
  return true;
};

self.playerState = () => ({
  currentTime: video.currentTime,
  readyState: video.readyState,
  error: video.error ? `${video.error.code}: ${video.error.message}` : null,
  events: self.playerEvents,
});
