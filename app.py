"""Launch the VALL-E X web demo (locally: `make app`; on a Hugging Face Space this is the app file)."""
from demo import main

if __name__ == "__main__":
    main()
