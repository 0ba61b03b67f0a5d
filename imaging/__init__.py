"""What an image's bytes are: the checks every way in applies before anything is stored (`imaging.checks`),
and the one rule that turns stored pixels into the 8-bit gray that training, serving, drift and the app
all see (`imaging.gray`). No catalog state: `imaging.gray` imports nothing of the platform, so the
networks' package can use it without knowing the catalog."""
