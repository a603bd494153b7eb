"""Launch the VALL-E X web demo (locally: `make app`; on a Hugging Face Space this is the app file)."""
import importlib.util
import sys

if __name__ == "__main__":
    if importlib.util.find_spec("gradio") is None:  # the library installs without it
        sys.exit("The web app needs Gradio: pip install 'vallex[app]' (or `make app`, which installs everything).")
    from demo import main

    main()
