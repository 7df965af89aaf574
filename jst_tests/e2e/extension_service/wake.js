// The page the test drives the service worker from (messages start a stopped worker).
self.callWorker = (call, args) => chrome.runtime.sendMessage({ call, args });
