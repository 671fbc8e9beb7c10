"""Launch the hfgd-lab Gradio app on the bundled default model: ``python app.py --help``."""
from hfgd_lab.app.server import main

raise SystemExit(main())
