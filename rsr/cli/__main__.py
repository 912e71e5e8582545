from rsr.cli import main

main()
