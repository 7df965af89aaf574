"""jst-link-handler: hands a magnet link or a .torrent file to the extension (§7).

target.py   what was asked for: validate a magnet, a path or a file:// URI (sans-I/O
            apart from reading the file)
hosts.py    finding a running native-host through rpc-info.json, and talking to it
launch.py   no host: open the browser on the launch page, the link in the fragment
main.py     the flow, as one trio task tree
cli.py      the entry point: arguments, quiet logging, the error dialog, exit codes
"""
