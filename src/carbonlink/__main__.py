from carbonlink.cli import main

main()
